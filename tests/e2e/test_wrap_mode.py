"""Training end in wrap mode: `ckptpushd ... run -- CMD` runs a training-like job (the Trainer
trace replayed with the run's real trainer_state.json and results), and when the job exits the
daemon makes the final push: the output root's files plus a model card and its curves in an
'End of training' commit, whose model-index carries the fixture run's eval loss. The daemon exits
with the command's status; a failing command's status wins; SIGTERM is passed on to the command."""

import contextlib
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

FIXTURES = os.path.join(h.SOURCE_DIR, "tests", "fixtures")
REPLAY = os.path.join(h.SOURCE_DIR, "tests", "tools", "replay.py")


def front_matter(text):
    import yaml

    return yaml.safe_load(h.split_card(text)[0])


class WrapMode(h.HubTestCase):
    def run_wrapped(self, name, command, args=()):
        watch = os.path.join(h.tempdir("ckpt-wrap-"), "output")
        os.mkdir(watch)
        repo = f"{h.USER}/{name}-{os.getpid()}"
        command = [c.replace("{out}", watch) for c in command]
        d = h.Daemon(watch, repo=repo, endpoint=self.hub.url,
                     args=["--quiet-ms", "200", *args, "run", "--", *command])
        return d, repo, watch

    def test_final_push_with_model_card(self):
        trainer_out = os.path.join(FIXTURES, "trainer-output")
        command = [sys.executable, REPLAY,
                   os.path.join(FIXTURES, "traces", "hf-trainer-5.17-save-steps.jsonl"),
                   "--into", "{out}", "--speed", "0.2",
                   "--content", "trainer_state.json=" + os.path.join(trainer_out, "trainer_state.json"),
                   "--content", "all_results.json=" + os.path.join(trainer_out, "all_results.json"),
                   "--content", "README.md=" + os.path.join(trainer_out,
                                                            "README.generated-by-trainer.md")]
        d, repo, _ = self.run_wrapped("wrapped", command)
        rc = d.proc.wait(timeout=120)
        d.stop()
        self.assertEqual(rc, 0, d.tail())
        self.assertEqual(len(d.events("command-exited")), 1, d.tail())
        titles = [h.commit_title(c) for c in self.hub.commits(repo)]
        self.assertEqual(titles[0], "End of training", titles)
        self.assertEqual(titles.count("End of training"), 1, titles)
        for step in (10, 20, 30, 40):
            self.assertIn(f"Training in progress, step {step}", titles)

        tree = self.hub.tree(repo)
        for path in ("README.md", "training_curves.svg", "model.safetensors", "config.json",
                     "trainer_state.json", "all_results.json"):
            self.assertIn(path, tree)
        status, _, body = self.hub.request("GET", f"/{repo}/resolve/main/README.md")
        self.assertEqual(status, 200)
        card = body.decode()
        meta = front_matter(card)
        self.assertEqual(meta["base_model"], "openai-community/gpt2")
        self.assertIn("Loss: 4.1618", card)
        self.assertNotIn("More information needed", card)
        self.assertIn("![Training curves](training_curves.svg)", card)
        # The results table rows are the fixture's evaluations.
        for row in ("| 10 | 0.5 |", "| 40 | 2 |"):
            self.assertIn(row, card)
        status, _, svg = self.hub.request("GET", f"/{repo}/resolve/main/training_curves.svg")
        self.assertEqual(status, 200)
        self.assertTrue(svg.startswith(b"<svg") or b"<svg" in svg[:200])

    def test_results_written_after_the_final_model_are_pushed(self):
        # A script saves the model, evaluates for longer than the quiet period, then writes its
        # results: they reach the hub in a second end-of-training commit, not lost as late.
        script = ("head -c 2000 /dev/urandom >{out}/model.safetensors && echo {{}} "
                  ">{out}/config.json && sleep 1 && echo '{{\"eval_loss\": 1.5}}' "
                  ">{out}/eval_results.json")
        d, repo, _ = self.run_wrapped("late-results", ["sh", "-c", script])
        rc = d.proc.wait(timeout=60)
        d.stop()
        self.assertEqual(rc, 0, d.tail())
        tree = self.hub.tree(repo)
        for path in ("model.safetensors", "config.json", "eval_results.json", "README.md"):
            self.assertIn(path, tree, d.tail())
        self.assertEqual(len(d.events("late-write")), 0, d.tail())

    def test_failing_command_status_wins(self):
        d, repo, _ = self.run_wrapped("failing", ["sh", "-c", "exit 3"])
        rc = d.proc.wait(timeout=60)
        d.stop()
        self.assertEqual(rc, 3, d.tail())

    def test_missing_command_is_a_usage_error(self):
        d, _, _ = self.run_wrapped("missing", ["/nonexistent/train"])
        rc = d.proc.wait(timeout=30)
        d.stop()
        self.assertEqual(rc, 2, d.tail())
        self.assertIn("cannot run '/nonexistent/train'", "\n".join(d.lines))

    def test_sigterm_is_passed_on(self):
        # The command traps SIGTERM, writes a last checkpoint like a preempted trainer would, and
        # exits 0: the daemon must push that checkpoint before exiting.
        script = ("trap 'mkdir -p {out}/checkpoint-7 && head -c 3000 /dev/urandom "
                  ">{out}/checkpoint-7/model.safetensors && echo {{}} >{out}/checkpoint-7/"
                  "trainer_state.json; exit 0' TERM; while :; do sleep 0.05; done")
        d, repo, _ = self.run_wrapped("preempted", ["sh", "-c", script])
        d.wait_event("ready", timeout=20)
        d.wait_event("command-started", timeout=20)
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(timeout=60)
        d.stop()
        self.assertEqual(rc, 0, d.tail())
        self.assertEqual(len(d.events("forwarding")), 1, d.tail())
        self.assertIn("Training in progress, step 7",
                      [h.commit_title(c) for c in self.hub.commits(repo)])

    def test_the_daemon_yields_the_cpu_and_the_command_keeps_its_priority(self):
        """--nice lowers the daemon's own threads only: the training it wraps runs as started."""
        base = os.nice(0)
        d, _, watch = self.run_wrapped(
            "nice", ["sh", "-c", "ps -o ni= -p $$ >{out}/nice.txt; while :; do sleep 0.05; done"],
            args=["--nice", "7"])
        d.wait_event("ready", timeout=20)
        path = os.path.join(watch, "nice.txt")
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(FileNotFoundError), open(path) as f:
                child_nice = f.read().strip()
                if child_nice:
                    break
            self.assertLess(time.monotonic(), deadline, d.tail())
            time.sleep(0.05)
        self.assertEqual(int(child_nice), base)
        with open(f"/proc/{d.proc.pid}/stat") as f:  # the loop thread (the process's first)
            loop_nice = int(f.read().rsplit(")", 1)[1].split()[16])
        self.assertEqual(loop_nice, max(base, 7))
        d.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
