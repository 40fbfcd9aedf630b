// The official JS client (@huggingface/hub, pinned in package.json) speaking Xet to
// tests/hub/hub.py. Owns: Xet upload of a repo commit (files from 0 B to 70 MiB, two xorbs for
// the largest), byte-exact download through XetBlob and through the LFS bridge, global dedup on
// a second upload of mostly the same data (fewer xorb bytes, from the request log), and
// Storage Buckets (create, upload, list, download, delete a file, delete the bucket).
// If this fails while the client is unchanged, the hub is wrong: fix the hub, never the client.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, "node_modules", "@huggingface", "hub"))) {
  console.error("test_official_xet: tests/hub/node_modules is missing; run\n" +
    "  npm ci --prefix tests/hub --no-audit --no-fund");
  process.exit(2);
}
const { createRepo, commit, listFiles, downloadFile, pathsInfo, deleteRepo } =
  await import("@huggingface/hub");

const TOKEN = "hf_js_xet_test_token";
const USER = "xetuser";
const MIB = 1024 * 1024;
const tmp = mkdtempSync(join(tmpdir(), "ckpt-hub-xet-"));
const logPath = join(tmp, "requests.jsonl");
const portFile = join(tmp, "port");
let hub = null;
let failed = false;

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");

function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

function readLog() {
  return readFileSync(logPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
}

async function startHub() {
  hub = spawn(process.env.PYTHON || "python3",
    [join(here, "hub.py"), "--data", join(tmp, "data"), "--port", "0", "--port-file", portFile,
      "--log", logPath, "--user", `${USER}:${TOKEN}`, "--xet", "on",
      // the client refreshes a token 60 s before it expires: with 61 s every CAS call of a
      // long upload needs a refresh, so the refresh path is exercised, not just the first token
      "--xet-token-ttl", "61"],
    { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  hub.stdout.on("data", (d) => (out += d));
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (hub.exitCode !== null) throw new Error("hub exited early with " + hub.exitCode);
    const m = out.match(/hub listening on (http:\/\/\S+)/);
    if (m && existsSync(portFile)) return m[1];
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("hub did not start; stdout: " + out);
}

// a checkpoint-like file: float32 values with structure, so LZ4 and byte grouping both apply
function floats(n) {
  const a = new Float32Array(n / 4);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i / 1000) * 0.01;
  return Buffer.from(a.buffer);
}

async function downloadExact(repo, hubUrl, path, want, what) {
  const blob = await downloadFile({ repo, path, hubUrl, accessToken: TOKEN });
  assert(blob, `${what}: ${path} downloadable`);
  const got = Buffer.from(await blob.arrayBuffer());
  assert(got.length === want.length && sha256(got) === sha256(want),
    `${what}: ${path} byte-exact (${got.length} bytes, want ${want.length})`);
}

async function main() {
  const hubUrl = await startHub();
  const repo = { type: "model", name: `${USER}/xet-test` };
  await createRepo({ repo, accessToken: TOKEN, hubUrl });

  const files = {
    "empty.bin": Buffer.alloc(0),
    "small.bin": randomBytes(1000),
    "zeros.bin": Buffer.alloc(8 * MIB),
    "floats.bin": floats(3 * MIB),
    "big.safetensors": randomBytes(70 * MIB),
  };
  const ops = Object.entries(files).map(([path, data]) =>
    ({ operation: "addOrUpdate", path, content: new Blob([data]) }));
  const res = await commit({ repo, accessToken: TOKEN, hubUrl, title: "Xet upload", operations: ops });
  assert(res && /^[0-9a-f]{40}$/.test(res.commit.oid), "commit oid " + JSON.stringify(res));

  let log = readLog();
  const batch = log.filter((r) => r.route === "lfs_batch" && r.status === 200);
  const xorbs1 = log.filter((r) => r.route === "xorb" && r.status === 200);
  const shards1 = log.filter((r) => r.route === "shard" && r.status === 200);
  assert(batch.length >= 1, "an LFS batch call");
  assert(!log.some((r) => ["lfs_put", "part_put", "complete"].includes(r.route)),
    "no LFS PUT: the bytes went through Xet");
  assert(xorbs1.length >= 2, `at least two xorbs (70 MiB random), got ${xorbs1.length}`);
  assert(shards1.length >= 1, "a shard upload");
  const xorbBytes1 = xorbs1.reduce((a, r) => a + r.bytes_in, 0);
  const tokens = log.filter((r) => r.route === "xet_token" && r.status === 200);
  assert(tokens.length >= 1, "the client refreshed its CAS token through xet-write-token");
  assert(!log.some((r) => ["xorb", "shard", "dedup", "reconstruction"].includes(r.route) &&
    r.status === 401), "no CAS call was refused for an expired token");
  assert(xorbBytes1 > 70 * MIB, `xorb bytes ${xorbBytes1} cover the random file`);

  const seen = {};
  for await (const e of listFiles({ repo, recursive: true, hubUrl, accessToken: TOKEN })) {
    seen[e.path] = e;
  }
  for (const [p, data] of Object.entries(files)) {
    assert(seen[p] && seen[p].size === data.length, `tree lists ${p} with its size`);
    if (data.length > 0) {
      assert(seen[p].lfs && seen[p].lfs.oid === sha256(data), `${p} is an LFS pointer`);
      assert(/^[0-9a-f]{64}$/.test(seen[p].xetHash || ""), `${p} has a xetHash`);
    }
  }
  const info = await pathsInfo({ repo, paths: ["big.safetensors"], hubUrl, accessToken: TOKEN });
  assert(info.length === 1 && info[0].xetHash === seen["big.safetensors"].xetHash,
    "paths-info carries the same xetHash");

  for (const [p, data] of Object.entries(files)) {
    // a 0-byte file is committed as a regular file (preupload), not through Xet
    if (data.length > 0) await downloadExact(repo, hubUrl, p, data, "XetBlob");
  }
  const recon = readLog().filter((r) => r.route === "reconstruction" && r.status === 200);
  const xorbGets = readLog().filter((r) => r.route === "xorb_get" && r.status === 206);
  assert(recon.length >= 4 && xorbGets.length >= 4,
    `downloads went through reconstruction (${recon.length}) and xorb ranges (${xorbGets.length})`);
  assert(xorbGets.every((r) => r.auth === false), "no Authorization on presigned xorb URLs");

  // a legacy client (no Xet) gets the bytes through the bridge: plain GET follows the redirect
  const legacy = await fetch(`${hubUrl}/${repo.name}/resolve/main/floats.bin`,
    { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert(legacy.status === 200, `bridge GET status ${legacy.status}`);
  assert(sha256(Buffer.from(await legacy.arrayBuffer())) === sha256(files["floats.bin"]),
    "bridge serves the bytes");
  const ranged = await fetch(`${hubUrl}/${repo.name}/resolve/main/big.safetensors`,
    { headers: { Authorization: `Bearer ${TOKEN}`, Range: "bytes=1000000-1000099" } });
  assert(ranged.status === 206, `bridge Range status ${ranged.status}`);
  assert(Buffer.compare(Buffer.from(await ranged.arrayBuffer()),
    files["big.safetensors"].subarray(1000000, 1000100)) === 0, "bridge Range bytes");

  // second upload: mostly the same data (one MiB changed in the middle)
  const edited = Buffer.from(files["big.safetensors"]);
  randomBytes(MIB).copy(edited, 35 * MIB);
  const before = readLog().length;
  await commit({ repo, accessToken: TOKEN, hubUrl, title: "Edited copy",
    operations: [{ operation: "addOrUpdate", path: "big-edited.safetensors", content: new Blob([edited]) }] });
  log = readLog().slice(before);
  const dedup = log.filter((r) => r.route === "dedup" && r.status === 200);
  const xorbBytes2 = log.filter((r) => r.route === "xorb" && r.status === 200)
    .reduce((a, r) => a + r.bytes_in, 0);
  assert(dedup.length >= 1, "the client asked global dedup and got a shard");
  assert(xorbBytes2 < 8 * MIB, `second upload sent ${xorbBytes2} xorb bytes for a 70 MiB ` +
    "file that differs in 1 MiB");
  await downloadExact(repo, hubUrl, "big-edited.safetensors", edited, "deduped file");

  // buckets
  const bucket = { type: "bucket", name: `${USER}/ckpt-bucket` };
  await createRepo({ repo: bucket, accessToken: TOKEN, hubUrl });
  const bfiles = {
    "run1/step-100/model.bin": randomBytes(3 * MIB),
    "run1/step-100/empty.txt": Buffer.alloc(0),
    "notes.txt": Buffer.from("bucket notes\n"),
  };
  await commit({ repo: bucket, accessToken: TOKEN, hubUrl, title: "bucket upload",
    operations: Object.entries(bfiles).map(([path, data]) =>
      ({ operation: "addOrUpdate", path, content: new Blob([data]) })) });
  const blist = {};
  for await (const e of listFiles({ repo: bucket, recursive: true, hubUrl, accessToken: TOKEN })) {
    blist[e.path] = e;
  }
  for (const [p, data] of Object.entries(bfiles)) {
    assert(blist[p] && blist[p].type === "file" && blist[p].size === data.length,
      `bucket lists ${p}: ${JSON.stringify(blist[p])}`);
    assert(/^[0-9a-f]{64}$/.test(blist[p].xetHash || ""), `bucket ${p} has a xetHash`);
    if (data.length > 0) await downloadExact(bucket, hubUrl, p, data, "bucket");
  }
  assert(blist["run1"] && blist["run1"].type === "directory", "bucket lists directories");
  assert(readLog().some((r) => r.route === "bucket_batch" && r.status === 200), "bucket batch");

  await commit({ repo: bucket, accessToken: TOKEN, hubUrl, title: "delete",
    operations: [{ operation: "delete", path: "notes.txt" }] });
  const after = [];
  for await (const e of listFiles({ repo: bucket, recursive: true, hubUrl, accessToken: TOKEN })) {
    after.push(e.path);
  }
  assert(!after.includes("notes.txt") && after.includes("run1/step-100/model.bin"),
    `deleteFile removed only notes.txt: ${after.join(", ")}`);
  const gone = await downloadFile({ repo: bucket, path: "notes.txt", hubUrl, accessToken: TOKEN });
  assert(gone === null, "a deleted bucket file is gone");
  await deleteRepo({ repo: bucket, accessToken: TOKEN, hubUrl });
  const info2 = await fetch(`${hubUrl}/api/buckets/${bucket.name}`,
    { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert(info2.status === 404, `deleted bucket answers 404, got ${info2.status}`);

  const refreshes = readLog().filter((r) => r.route === "xet_token").length;
  console.log(`ok: official client over Xet: first upload ${xorbs1.length} xorbs ` +
    `(${xorbBytes1} bytes), edited copy ${xorbBytes2} xorb bytes after dedup, ` +
    `${refreshes} token requests`);
}

try {
  await main();
} catch (e) {
  failed = true;
  console.error("FAIL:", e && e.stack ? e.stack : e);
} finally {
  if (hub && hub.exitCode === null) {
    const exited = new Promise((r) => hub.once("exit", r));
    hub.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (hub.exitCode === null) hub.kill("SIGKILL");
  }
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
