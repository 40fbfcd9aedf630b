"""The official Python client (huggingface_hub) doing the commits a benchmark scenario asks for,
so bench.py can time it against ckptpushd on the same hub: HfApi.upload_folder, one call per
checkpoint, on its LFS path (HF_HUB_DISABLE_XET=1: the test hub's LFS bridge, as for js).

Runs under whatever interpreter can import huggingface_hub (bench.py finds one: $HF_HUB_PYTHON,
else python3); reads argv[1], a JSON file {hubUrl, token, repo, commits: [[[pathInRepo,
localPath]...]...]}, whose files of one commit all lie in one folder. Prints one JSON line
{seconds: [...per commit], oids: [...]}.
"""

import json
import os
import sys
import time

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

spec = json.load(open(sys.argv[1]))
os.environ["HF_ENDPOINT"] = spec["hubUrl"]
from huggingface_hub import HfApi  # noqa: E402  (HF_ENDPOINT must be set first)

api = HfApi(endpoint=spec["hubUrl"], token=spec["token"])
api.create_repo(spec["repo"], private=True, exist_ok=True)
seconds, oids = [], []
for i, files in enumerate(spec["commits"]):
    folder = os.path.dirname(files[0][1])
    wanted = {path for path, _ in files}
    skipped = [f for f in os.listdir(folder) if f not in wanted]
    t0 = time.monotonic()
    info = api.upload_folder(repo_id=spec["repo"], folder_path=folder,
                             commit_message=f"bench commit {i + 1}",
                             ignore_patterns=skipped or None)
    seconds.append(time.monotonic() - t0)
    oids.append(info.oid)
print(json.dumps({"seconds": seconds, "oids": oids}))
