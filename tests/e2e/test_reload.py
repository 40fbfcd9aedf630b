"""SIGHUP reloads the configuration: what a running daemon can change takes effect (log level,
drain deadline, a rotated token file), every other setting changed is named as needing a
restart, and a broken file changes nothing and stops nothing."""

import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402


class Reload(unittest.TestCase):
    def test_sighup(self):
        watch = h.tempdir("ckpt-reload-")
        conf = os.path.join(h.tempdir("ckpt-reload-conf-"), "ckptpushd.json")

        def write_conf(**extra):
            body = {"repo": "alice/reload", "log_level": "info", "drain_timeout_s": 30}
            body.update(extra)
            with open(conf + ".tmp", "w") as f:
                json.dump(body, f)
            os.replace(conf + ".tmp", conf)

        write_conf()
        d = h.Daemon(watch, args=["--dry-run", "--config", conf], log_level=None)
        try:
            d.wait_event("ready", timeout=20)
            write_conf(log_level="debug", drain_timeout_s=45)
            d.proc.send_signal(signal.SIGHUP)
            rec = d.wait_event("reloaded", timeout=10)[0]["kv"]
            self.assertEqual(rec["drain_timeout_s"], "45")
            self.assertNotIn("needs_restart", rec)

            write_conf(repo="alice/elsewhere")
            d.proc.send_signal(signal.SIGHUP)
            rec = d.wait_event("reloaded", timeout=10, count=2)[1]["kv"]
            self.assertEqual(rec["needs_restart"], "repo")

            # Every setting that a running daemon does not take is named, none silently kept.
            write_conf(staging_max=1 << 30, max_rate=1000000, commits_per_hour=4,
                       include=["*.json"], rules=["*.bin"], card={"license": "mit"})
            d.proc.send_signal(signal.SIGHUP)
            rec = d.wait_event("reloaded", timeout=10, count=3)[2]["kv"]
            self.assertEqual(rec["needs_restart"].split(","),
                             ["staging_max", "include", "max_rate", "commits_per_hour", "rules",
                              "card"], rec)

            with open(conf, "w") as f:
                f.write("{ not json")
            d.proc.send_signal(signal.SIGHUP)
            d.wait_event("reload-rejected", timeout=10)
            self.assertIsNone(d.proc.poll(), "a broken file must not stop the daemon")
        finally:
            self.assertEqual(d.stop(), 0, d.tail())


if __name__ == "__main__":
    unittest.main(verbosity=2)
