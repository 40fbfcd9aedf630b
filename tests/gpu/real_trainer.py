"""A real transformers Trainer run against ckptpushd and the test hub, for a machine that has
torch and transformers (the GPU machine; not part of ctest: CI has neither). It trains a tiny
GPT-2 from a config (no download), saves every 10 steps with rotation, uses the CkptpushCallback,
ends with save_model(), then downloads the pushed repository with the official Python client
(huggingface_hub, HF_HUB_DISABLE_XET=1) and loads it with from_pretrained.

    python3 tests/gpu/real_trainer.py            # prints what was pushed and a JSON summary
Needs a build (build/ckptpushd) and exits non-zero on any failure."""

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
import ckpt_harness as h  # noqa: E402


def main():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from ckptpush.transformers import CkptpushCallback

    hub = h.Hub()
    out = os.path.join(tempfile.mkdtemp(prefix="ckpt-gpu-"), "output")
    os.mkdir(out)
    repo = f"{h.USER}/real-trainer-{os.getpid()}"
    sock = os.path.join(tempfile.mkdtemp(prefix="ckpt-gpu-sock-"), "d.sock")
    daemon = h.Daemon(out, repo=repo, endpoint=hub.url,
                      args=["--quiet-ms", "500", "--socket", sock])
    daemon.wait_event("ready", timeout=30)

    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=1000, n_positions=128)
    model = GPT2LMHeadModel(config)
    data = [{"input_ids": torch.randint(0, 1000, (64,)), "labels": None} for _ in range(320)]
    for row in data:
        row["labels"] = row["input_ids"]
    args = TrainingArguments(output_dir=out, max_steps=40, save_steps=10, save_total_limit=2,
                             per_device_train_batch_size=8, logging_steps=5, report_to=[],
                             eval_strategy="steps", eval_steps=10, per_device_eval_batch_size=8)
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:32],
                      callbacks=[CkptpushCallback(socket_path=sock, wait=True)])
    started = time.time()
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    daemon.proc.send_signal(15)
    rc = daemon.proc.wait(timeout=300)
    print(f"daemon exit {rc} after {time.time() - started:.1f} s")
    assert rc == 0, daemon.tail()

    env = dict(os.environ, HF_HUB_DISABLE_XET="1", HF_ENDPOINT=hub.url, HF_TOKEN=h.TOKEN)
    local = tempfile.mkdtemp(prefix="ckpt-gpu-dl-")
    code = ("import sys\nfrom huggingface_hub import snapshot_download\n"
            "from transformers import AutoModelForCausalLM\n"
            f"p = snapshot_download({repo!r}, local_dir={local!r})\n"
            "m = AutoModelForCausalLM.from_pretrained(p)\n"
            "print('loaded', type(m).__name__, sum(x.numel() for x in m.parameters()))\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    titles = [h.commit_title(c) for c in hub.commits(repo)]
    print(json.dumps({"commits": titles, "files": sorted(os.listdir(local))}, indent=1))
    assert "End of training" in titles, titles
    hub.stop()


if __name__ == "__main__":
    main()
