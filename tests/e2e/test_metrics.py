"""--metrics-path: a Prometheus textfile written atomically on change. The test pushes one
checkpoint to the test hub and parses the file: every sample line is well-formed, each metric has
HELP and TYPE, the values say one committed checkpoint, its bytes uploaded, an empty queue, a
recent commit time; an idle daemon does not rewrite the file; the file at exit says up 0."""

import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402
from test_notify import write_checkpoint  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)\})? (\S+)$')


def parse(text):
    """Prometheus text format -> {(name, labels): value}, checking every line on the way."""
    helps, types, samples = set(), {}, {}
    assert text.endswith("\n"), "the file ends with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge"), line
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels, value = m.group(1), m.group(3) or "", float(m.group(4))
            assert name in types and name in helps, f"{name} lacks HELP/TYPE"
            if types[name] == "counter":
                assert name.endswith("_total"), name
            samples[(name, labels)] = value
    return samples


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class Metrics(unittest.TestCase):
    def test_metrics_file(self):
        hub = h.Hub()
        self.addCleanup(hub.stop)
        watch = h.tempdir("ckpt-metrics-")
        prom_dir = h.tempdir("ckpt-prom-")
        path = os.path.join(prom_dir, "ckptpush.prom")
        repo = f"{h.USER}/metrics-{os.getpid()}"
        d = h.Daemon(watch, repo=repo, endpoint=hub.url,
                     args=["--quiet-ms", "200", "--metrics-path", path, "--job", "m1"])
        self.addCleanup(d.stop, signal.SIGKILL, 5)
        d.wait_event("ready", timeout=20)
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = parse(read(path))
        self.assertEqual(first[("ckptpush_up", "")], 1)
        self.assertEqual(first[("ckptpush_queue_depth", "")], 0)
        self.assertEqual(first[("ckptpush_last_commit_timestamp_seconds", "")], 0)
        self.assertEqual(first[("ckptpush_info", f'version="0.1.0",repo="{repo}",job="m1"')], 1)

        size = 300_000
        write_checkpoint(watch, 5, size)
        d.wait_event("committed", timeout=30)
        # Written on change, at most once a second: the commit shows within about a second.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            s = parse(read(path))
            if s[("ckptpush_checkpoints_total", 'result="committed"')] == 1:
                break
            time.sleep(0.1)
        self.assertEqual(s[("ckptpush_checkpoints_total", 'result="committed"')], 1, s)
        self.assertEqual(s[("ckptpush_checkpoints_total", 'result="failed"')], 0)
        self.assertEqual(s[("ckptpush_queue_depth", "")], 0)
        for state in ("waiting", "pinning", "uploading"):
            self.assertEqual(s[("ckptpush_checkpoints", f'state="{state}"')], 0)
        self.assertGreaterEqual(s[("ckptpush_uploaded_bytes_total", "")], size)
        self.assertAlmostEqual(s[("ckptpush_last_commit_timestamp_seconds", "")], time.time(),
                               delta=30)
        self.assertGreaterEqual(s[("ckptpush_http_retries_total", "")], 0)
        self.assertGreaterEqual(s[("ckptpush_staging_bytes", "")], 0)
        # No temp file left beside it (the collector would ignore it, the operator would not).
        self.assertEqual(sorted(os.listdir(prom_dir)), ["ckptpush.prom"])

        # Idle: no polling, so the file stays as it is.
        time.sleep(1.5)
        mtime = os.stat(path).st_mtime_ns
        time.sleep(2.0)
        self.assertEqual(os.stat(path).st_mtime_ns, mtime, "an idle daemon rewrote the file")

        self.assertEqual(d.stop(signal.SIGTERM, 30), 0, d.tail())
        last = parse(read(path))
        self.assertEqual(last[("ckptpush_up", "")], 0)
        # the drain may add the model card's own commit
        self.assertGreaterEqual(last[("ckptpush_checkpoints_total", 'result="committed"')], 1)
        self.assertEqual(last[("ckptpush_queue_depth", "")], 0)
        self.assertEqual(sorted(os.listdir(prom_dir)), ["ckptpush.prom"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
