"""What operators install and copy: the systemd units (systemd-analyze verify and the security
exposure score), the configuration example (read by the daemon's own parser), the Kubernetes
manifest (structure, and its sidecar arguments through --check-config), the SLURM script (bash -n,
then run with a stand-in srun: SIGUSR1 becomes a drain, array tasks get their own socket, a
requeued task restores its checkpoint from the test hub before training), and `cmake --install`
into a DESTDIR."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE = os.environ.get("CKPT_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CKPT_BUILD_DIR") or os.path.join(SOURCE, "build")
DAEMON = os.environ.get("CKPTPUSHD") or os.path.join(BUILD, "ckptpushd")
CLIENT = os.environ.get("CKPTPUSH") or os.path.join(BUILD, "client", "ckptpush")
UNITS = {"system": os.path.join(SOURCE, "systemd", "ckptpushd@.service.in"),
         "user": os.path.join(SOURCE, "systemd", "user", "ckptpushd@.service.in")}
EXAMPLE = os.path.join(SOURCE, "config", "ckptpushd.example.jsonc")
CONFIG_README = os.path.join(SOURCE, "config", "README.md")
POD = os.path.join(SOURCE, "examples", "kubernetes", "training-pod.yaml")
SBATCH = os.path.join(SOURCE, "examples", "slurm", "train-with-ckptpushd.sbatch")
MULTI_SBATCH = os.path.join(SOURCE, "examples", "slurm", "multinode.sbatch")
MULTI_JOB = os.path.join(SOURCE, "examples", "kubernetes", "multinode-job.yaml")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CKPTPUSH_", "HF_", "HUGGING_FACE", "NOTIFY_SOCKET",
                                "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY"))}
    env.update(extra)
    return env


def unit_settings(text):
    """[(section, key, value)] of a unit file."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def seconds(value):
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


class Units(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ckpt-units-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def instance(self, kind):
        """The unit as installed (ExecStart: the built daemon), as instance 'job1'."""
        d = os.path.join(self.tmp, kind)
        os.makedirs(d, exist_ok=True)
        with open(UNITS[kind]) as f:
            text = f.read().replace("@CMAKE_INSTALL_FULL_BINDIR@", os.path.dirname(DAEMON))
        path = os.path.join(d, "ckptpushd@job1.service")
        with open(path, "w") as f:
            f.write(text)
        return path, text

    def analyze(self, *args, user=False):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")
        env = dict(os.environ)
        argv = ["systemd-analyze"]
        if user:
            argv.append("--user")
            env["XDG_RUNTIME_DIR"] = self.tmp  # a user manager needs one, even offline
        return subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                              cwd=self.tmp, timeout=60)

    def test_settings(self):
        for kind in UNITS:
            _, text = self.instance(kind)
            s = unit_settings(text)
            get = {(sec, k): v for sec, k, v in s}
            self.assertEqual(get[("Service", "Type")], "notify")
            self.assertIn(("Service", "WatchdogSec"), get)
            drain = [v for sec, k, v in s if k == "Environment" and
                     v.startswith("CKPTPUSH_DRAIN_TIMEOUT_S=")]
            self.assertEqual(len(drain), 1, kind)
            drain_s = int(drain[0].split("=")[1])
            self.assertGreater(seconds(get[("Service", "TimeoutStopSec")]), drain_s,
                               "systemd must not SIGKILL before the drain deadline")
            self.assertIn("CKPTPUSH_JOB=%i", [v for _, k, v in s if k == "Environment"])
            self.assertEqual(get[("Service", "NoNewPrivileges")], "yes")
            self.assertEqual(get[("Service", "RestrictAddressFamilies")],
                             "AF_UNIX AF_INET AF_INET6")
        _, text = self.instance("system")
        get = {(sec, k): v for sec, k, v in unit_settings(text)}
        self.assertEqual(get[("Service", "LoadCredential")], "hf_token:/etc/ckptpush/hf_token")
        self.assertEqual(get[("Service", "EnvironmentFile")], "/etc/ckptpush/%i.env")
        for key, want in (("ProtectSystem", "strict"), ("PrivateTmp", "yes"),
                          ("ProtectHome", "read-only"), ("CapabilityBoundingSet", ""),
                          ("MemoryDenyWriteExecute", "yes")):
            self.assertEqual(get[("Service", key)], want, key)

    def test_verify(self):
        for kind in UNITS:
            path, _ = self.instance(kind)
            r = self.analyze("verify", "--man=no", path, user=(kind == "user"))
            self.assertEqual(r.returncode, 0, f"{kind}: {r.stdout}{r.stderr}")
            # Unknown keys and bad values are warnings only: any output is a finding.
            self.assertEqual(r.stdout + r.stderr, "", kind)

    def test_security_exposure(self):
        path, _ = self.instance("system")
        r = self.analyze("security", "--offline=yes", path)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        self.assertTrue(m, r.stdout + r.stderr)
        score = float(m.group(1))
        print(f"systemd-analyze security (system unit): {score}", file=sys.stderr)
        self.assertLessEqual(score, 2.0, r.stdout)


class ConfigExample(unittest.TestCase):
    def test_example_is_valid_and_documented(self):
        tmp = tempfile.mkdtemp(prefix="ckpt-cfgex-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(EXAMPLE) as f:
            example_text = f.read()
        keys = re.findall(r'^\s*"([a-z_]+)":', example_text, re.M)
        # The example's own paths do not exist here: flags override them (flags win).
        r = subprocess.run([DAEMON, "--config", EXAMPLE, "--watch", tmp, "--check-config"],
                           capture_output=True, text=True, timeout=30,
                           env=clean_env(HF_TOKEN="hf_example", HOME=tmp))
        self.assertEqual(r.returncode, 0, r.stderr)
        eff = json.loads(r.stdout)
        self.assertEqual(eff["repo"], "your-org/run-42")
        self.assertEqual(eff["config_file"], EXAMPLE)
        self.assertEqual(eff["token"], "hf_***")
        self.assertEqual(eff["job"], "run-42")
        self.assertNotIn("hf_example", r.stdout)
        with open(CONFIG_README) as f:
            readme = f.read()
        for k in keys:
            self.assertIn(k, eff, f"example key '{k}' is not a setting")
            self.assertIn(f"| `{k}` |", readme, f"key '{k}' is not documented")
        # Every setting the daemon reports appears in the example.
        settings = set(eff) - {"token", "token_source", "config_file", "offline", "staging"}
        self.assertEqual(settings - set(keys), set(), "settings missing from the example")

    def test_invalid_file_reports_every_key(self):
        tmp = tempfile.mkdtemp(prefix="ckpt-cfgbad-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "bad.jsonc")
        with open(path, "w") as f:
            f.write('// two bad values and an unknown key\n'
                    '{"watch": "%s", "repo": "a/b", "quiet_ms": -5, "log_format": "xml",\n'
                    ' "colour": "blue"}\n' % tmp)
        r = subprocess.run([DAEMON, "--config", path, "--check-config"], capture_output=True,
                           text=True, timeout=30, env=clean_env(HF_TOKEN="hf_x", HOME=tmp))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 3, r.stderr)
        self.assertTrue(any("quiet_ms" in x for x in lines))
        self.assertTrue(any("log_format: unknown format 'xml'" in x for x in lines))
        self.assertTrue(any("unknown key 'colour'" in x for x in lines))


class Kubernetes(unittest.TestCase):
    def test_pod(self):
        import yaml
        with open(POD) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        pods = [d for d in docs if d.get("kind") == "Pod"]
        self.assertEqual(len(pods), 1)
        spec = pods[0]["spec"]
        sidecars = [c for c in spec.get("initContainers", []) if c["name"] == "ckptpushd"]
        self.assertEqual(len(sidecars), 1, "ckptpushd is an init container")
        side = sidecars[0]
        names = [c["name"] for c in spec["initContainers"]]
        self.assertLess(names.index("restore"), names.index("ckptpushd"),
                        "the checkpoint is restored before the daemon watches the volume")
        restore = spec["initContainers"][names.index("restore")]
        self.assertNotIn("restartPolicy", restore, "runs to completion first")
        self.assertEqual(restore["command"][:2], ["ckptpush", "restore"])
        self.assertIn("--missing-ok", restore["command"])
        restore_vols = {m["name"]: m["mountPath"] for m in restore["volumeMounts"]}
        self.assertEqual(side.get("restartPolicy"), "Always", "a native (restartable) sidecar")
        trainer = spec["containers"][0]
        side_vols = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
        train_vols = {m["name"]: m["mountPath"] for m in trainer["volumeMounts"]}
        args = side["args"]
        opt = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        shared = [n for n in side_vols if n in train_vols and side_vols[n] == opt["watch"]]
        self.assertTrue(shared, "the watched directory is a volume the trainer writes")
        self.assertEqual(train_vols[shared[0]], opt["watch"])
        self.assertEqual(restore_vols[shared[0]], restore["command"][-1])
        self.assertIn("--repo", restore["command"])
        self.assertEqual(restore["command"][restore["command"].index("--repo") + 1], opt["repo"])
        self.assertIn(shared[0], {v["name"] for v in spec["volumes"]})
        self.assertGreater(spec["terminationGracePeriodSeconds"], int(opt["drain-timeout"]))
        token = [e for e in side["env"] if e["name"] == "HF_TOKEN"]
        self.assertEqual(len(token), 1)
        self.assertIn("secretKeyRef", token[0]["valueFrom"])
        self.assertNotIn("value", token[0])
        socket_env = [e for e in trainer["env"] if e["name"] == "CKPTPUSH_SOCKET"]
        self.assertEqual(socket_env[0]["value"], opt["socket"])

        # The sidecar's flags, as the daemon's own parser sees them.
        tmp = tempfile.mkdtemp(prefix="ckpt-k8s-")
        self.addCleanup(shutil.rmtree, tmp, True)
        local = [a.replace("=/output", "=" + tmp).replace("=/run/ckptpush/", "=" + tmp + "/")
                 .replace("=/metrics/", "=" + tmp + "/") for a in args]
        r = subprocess.run([DAEMON] + local + ["--check-config"], capture_output=True,
                           text=True, timeout=30, env=clean_env(HF_TOKEN="hf_k8s", HOME=tmp))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["drain_timeout_s"], int(opt["drain-timeout"]))


class Slurm(unittest.TestCase):
    def test_syntax_and_signal_lead(self):
        r = subprocess.run(["bash", "-n", SBATCH], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(SBATCH) as f:
            text = f.read()
        m = re.search(r"^#SBATCH --signal=B:USR1@(\d+)$", text, re.M)
        self.assertTrue(m, "pre-termination signal to the batch shell")
        drain = int(re.search(r"DRAIN_TIMEOUT_S=\$\{DRAIN_TIMEOUT_S:-(\d+)\}", text).group(1))
        self.assertLess(drain, int(m.group(1)), "the drain ends before SLURM kills the job")

    def test_usr1_drains_array_task(self):
        tmp = tempfile.mkdtemp(prefix="ckpt-slurm-")
        self.addCleanup(shutil.rmtree, tmp, True)
        bindir = os.path.join(tmp, "bin")
        os.mkdir(bindir)
        os.symlink(DAEMON, os.path.join(bindir, "ckptpushd"))
        with open(os.path.join(bindir, "srun"), "w") as f:
            f.write('#!/bin/bash\n# stand-in: drop srun options, run the command\n'
                    'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
        os.chmod(os.path.join(bindir, "srun"), 0o755)
        runtime = os.path.join(tmp, "run")
        os.mkdir(runtime)
        env = clean_env(PATH=bindir + os.pathsep + os.environ["PATH"], HOME=tmp,
                        SLURM_JOB_ID="78", SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3",
                        OUTPUT_ROOT=os.path.join(tmp, "runs"), XDG_RUNTIME_DIR=runtime,
                        TRAIN_CMD="sleep 60", CKPTPUSH_DRY_RUN="1")
        p = subprocess.Popen(["bash", SBATCH], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            sock = os.path.join(runtime, "ckptpush", "train-77-3.sock")
            deadline = time.monotonic() + 20
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertTrue(os.path.exists(sock), "array task 3 has its own socket")
            self.assertTrue(os.path.isdir(os.path.join(tmp, "runs", "train-77-3", "output")))
            t0 = time.monotonic()
            p.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 does
            _, err = p.communicate(timeout=30)
            self.assertLess(time.monotonic() - t0, 20)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.assertIn("SIGUSR1: stopping training, draining pushes", err)
        self.assertEqual(p.returncode, 143, err)  # the training's SIGTERM status
        with open(os.path.join(tmp, "runs", "train-77-3", "ckptpushd.log")) as f:
            log = [json.loads(line) for line in f]
        events = [r["event"] for r in log]
        self.assertIn("draining", events)
        stopped = [r for r in log if r["event"] == "stopped"]
        self.assertEqual(stopped[-1]["exit"], 0, log)
        self.assertIn("ckptpushd exited 0", err)


    def test_requeued_task_restores_before_training(self):
        sys.path.insert(0, os.path.join(SOURCE, "tests", "e2e"))
        import base64
        import ckpt_harness as h
        hub = h.Hub()
        self.addCleanup(hub.stop)
        repo = f"{h.USER}/requeued-{os.getpid()}"
        status, _, body = hub.request("POST", "/api/repos/create", body={"name": repo})
        self.assertEqual(status, 200, body)
        files = {"checkpoint-30/trainer_state.json": b'{"global_step": 30}\n',
                 "checkpoint-30/config.json": b'{"a": 1}\n'}
        lines = [{"key": "header", "value": {"summary": "Training in progress, step 30"}}]
        lines += [{"key": "file", "value": {"path": p, "encoding": "base64",
                                            "content": base64.b64encode(d).decode()}}
                  for p, d in files.items()]
        status, _, body = hub.request("POST", f"/api/models/{repo}/commit/main",
                                      body="\n".join(json.dumps(x) for x in lines).encode(),
                                      headers={"Content-Type": "application/x-ndjson"})
        self.assertEqual(status, 200, body)

        tmp = tempfile.mkdtemp(prefix="ckpt-requeue-")
        self.addCleanup(shutil.rmtree, tmp, True)
        bindir = os.path.join(tmp, "bin")
        os.mkdir(bindir)
        os.symlink(DAEMON, os.path.join(bindir, "ckptpushd"))
        os.symlink(CLIENT, os.path.join(bindir, "ckptpush"))
        with open(os.path.join(bindir, "srun"), "w") as f:
            f.write('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
        os.chmod(os.path.join(bindir, "srun"), 0o755)
        # the "training": did it find the checkpoint when it started? Then it waits for the
        # daemon's socket, as a trainer callback would talk to it (the script's SIGTERM at the
        # end must find the daemon running)
        with open(os.path.join(bindir, "train"), "w") as f:
            f.write('#!/bin/bash\ntest -f "$1" || exit 1\nfor _ in $(seq 400); do\n'
                    '    [ -S "$CKPTPUSH_SOCKET" ] && exit 0\n    sleep 0.05\ndone\nexit 2\n')
        os.chmod(os.path.join(bindir, "train"), 0o755)
        out = os.path.join(tmp, "runs", "train-5-0", "output")
        for name, want_rc in ((repo, 0), (f"{h.USER}/never-pushed", 1)):
            env = clean_env(PATH=bindir + os.pathsep + os.environ["PATH"], HOME=tmp,
                            SLURM_JOB_ID="5", SLURM_RESTART_COUNT="1",
                            OUTPUT_ROOT=os.path.join(tmp, "runs"), XDG_RUNTIME_DIR=tmp,
                            HF_ENDPOINT=hub.url, HF_TOKEN=h.TOKEN, REPO=name,
                            TRAIN_CMD=f"train {out}/checkpoint-30/config.json",
                            CKPTPUSH_DRY_RUN="1")
            shutil.rmtree(os.path.join(tmp, "runs"), ignore_errors=True)
            r = subprocess.run(["bash", SBATCH], env=env, capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, want_rc, r.stdout + r.stderr)
            if want_rc == 0:
                self.assertIn(f"restored {out}/checkpoint-30", r.stdout)
                self.assertIn("ckptpushd exited 0", r.stderr)
            else:  # a first push never happened: --missing-ok, the training starts (and finds
                # no checkpoint)
                self.assertIn("nothing to restore: repo not found", r.stdout)


class MultiNodeExamples(unittest.TestCase):
    """One daemon per node, rank 0 coordinates, the secret from shared storage or a Secret: the
    examples' daemon arguments, through the daemon's own parser with the cluster's environment."""

    def check_config(self, args, **env):
        tmp = tempfile.mkdtemp(prefix="ckpt-multi-")
        self.addCleanup(shutil.rmtree, tmp, True)
        local = [a.replace("=/ckpt", "=" + tmp).replace("=/run/ckptpush/", "=" + tmp + "/")
                 for a in args]
        r = subprocess.run([DAEMON, "--watch", tmp, *local, "--check-config"],
                           capture_output=True, text=True, timeout=30,
                           env=clean_env(HF_TOKEN="hf_multi", HOME=tmp, **env))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_sbatch(self):
        r = subprocess.run(["bash", "-n", MULTI_SBATCH], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(MULTI_SBATCH) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^srun --overlap --ntasks-per-node=1 .*bash -c")
        self.assertIn("umask 077", text)
        for flag in ("--nodes auto", "--coordinator", "--job-secret-file"):
            self.assertIn(flag, text)
        # a task on node 2 of 4: what srun gives it
        tmp = tempfile.mkdtemp(prefix="ckpt-multi-")
        self.addCleanup(shutil.rmtree, tmp, True)
        secret = os.path.join(tmp, "job.secret")
        with open(secret, "w") as f:
            f.write("c2VjcmV0LW9mLXRoaXMtam9iLW5vdC1sb2dnZWQ=\n")
        out = self.check_config(["--repo", "org/run", "--nodes", "auto", "--coordinator",
                                 "node001:29555", "--job-secret-file", secret],
                                SLURM_NNODES="4", SLURM_NODEID="2")
        cfg = json.loads(out)
        self.assertEqual((cfg["nodes"], cfg["node_rank"], cfg["coordinator"]),
                         (4, 2, "node001:29555"))
        self.assertEqual(cfg["job_secret"], "***")
        self.assertNotIn("c2VjcmV0", out)

    def test_job(self):
        import yaml
        with open(MULTI_JOB) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        job = [d for d in docs if d["kind"] == "Job"][0]
        svc = [d for d in docs if d["kind"] == "Service"][0]
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        pod = spec["template"]["spec"]
        side = [c for c in pod["initContainers"] if c["name"] == "ckptpushd"][0]
        self.assertEqual(side.get("restartPolicy"), "Always", "a native sidecar in each pod")
        opt = dict(a[2:].split("=", 1) for a in side["args"] if a.startswith("--"))
        self.assertEqual(int(opt["nodes"]), spec["completions"])
        self.assertEqual(opt["coordinator"],
                         f"{job['metadata']['name']}-0.{pod['subdomain']}:29555")
        self.assertEqual(svc["metadata"]["name"], pod["subdomain"])
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        env = {e["name"]: e for e in side["env"]}
        self.assertIn("job-completion-index", env["NODE_RANK"]["valueFrom"]["fieldRef"]
                      ["fieldPath"])
        self.assertIn("secretKeyRef", env["CKPTPUSH_JOB_SECRET"]["valueFrom"])
        self.assertNotIn("value", env["CKPTPUSH_JOB_SECRET"])
        cfg = json.loads(self.check_config(
            [a for a in side["args"] if not a.startswith("--watch")], NODE_RANK="3",
            CKPTPUSH_JOB_SECRET="a-secret-of-twenty-four-b"))
        self.assertEqual((cfg["nodes"], cfg["node_rank"]), (4, 3))
        self.assertGreater(pod["terminationGracePeriodSeconds"], int(opt["drain-timeout"]))


class Install(unittest.TestCase):
    def test_destdir(self):
        cache = os.path.join(BUILD, "CMakeCache.txt")
        if not os.path.exists(cache):
            self.skipTest("no CMake build directory")
        with open(cache) as f:
            prefix = re.search(r"^CMAKE_INSTALL_PREFIX:PATH=(.*)$", f.read(), re.M).group(1)
        dest = tempfile.mkdtemp(prefix="ckpt-install-")
        self.addCleanup(shutil.rmtree, dest, True)
        r = subprocess.run(["cmake", "--install", BUILD], capture_output=True, text=True,
                           env=dict(os.environ, DESTDIR=dest), timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        root = dest + prefix
        want = ["bin/ckptpushd", "lib/systemd/system/ckptpushd@.service",
                "lib/systemd/user/ckptpushd@.service", "lib/sysusers.d/ckptpush.conf",
                "share/doc/ckptpush/config/ckptpushd.example.jsonc",
                "share/doc/ckptpush/config/README.md",
                "share/doc/ckptpush/examples/slurm/train-with-ckptpushd.sbatch",
                "share/doc/ckptpush/examples/kubernetes/training-pod.yaml",
                "share/doc/ckptpush/examples/slurm/multinode.sbatch",
                "share/doc/ckptpush/examples/kubernetes/multinode-job.yaml"]
        if os.path.isdir(os.path.join(SOURCE, "client", "python")):
            want.append("share/ckptpush/python/ckptpush/__init__.py")
        for rel in want:
            self.assertTrue(os.path.isfile(os.path.join(root, rel)), rel)
        self.assertTrue(os.access(os.path.join(root, "bin/ckptpushd"), os.X_OK))
        with open(os.path.join(root, "lib/systemd/system/ckptpushd@.service")) as f:
            unit = f.read()
        self.assertIn(f"ExecStart={prefix}/bin/ckptpushd", unit)
        self.assertNotIn("@CMAKE", unit)


if __name__ == "__main__":
    unittest.main(verbosity=2)
