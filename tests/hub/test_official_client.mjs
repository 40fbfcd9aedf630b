// The official JS client (@huggingface/hub, pinned in package.json) against tests/hub/hub.py.
// Owns: one end-to-end run (create, commit with a 4-part multipart LFS file, list, download)
// over the LFS transfer (hub started with --xet off; test_official_xet.mjs covers Xet).
// If this fails while the client is unchanged, the hub is wrong: fix hub.py, never the client.
// Runs hub.py as a child process on a temp data dir and kills it at the end.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
if (!existsSync(join(here, "node_modules", "@huggingface", "hub"))) {
  console.error(
    "test_official_client: tests/hub/node_modules is missing; run\n" +
      "  npm ci --prefix tests/hub --no-audit --no-fund\n" +
      "from the repository root (needs the npm registry once).",
  );
  process.exit(2);
}
const hubLib = await import("@huggingface/hub");
const { createRepo, commit, listFiles, downloadFile, whoAmI, repoExists } = hubLib;

const TOKEN = "hf_js_client_test_token";
const USER = "jsuser";
const CHUNK = 5242880;
const tmp = mkdtempSync(join(tmpdir(), "ckpt-hub-js-"));
const logPath = join(tmp, "requests.jsonl");
const portFile = join(tmp, "port");
let hub = null;
let failed = false;

function sha256(buf) {
  return createHash("sha256").update(buf).digest("hex");
}

function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

async function startHub() {
  const python = process.env.PYTHON || "python3";
  hub = spawn(
    python,
    [join(here, "hub.py"), "--data", join(tmp, "data"), "--port", "0", "--port-file", portFile,
      "--log", logPath, "--user", `${USER}:${TOKEN}`, "--multipart-threshold", String(CHUNK),
      "--chunk-size", String(CHUNK), "--xet", "off"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
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

async function main() {
  const hubUrl = await startHub();
  const credentials = { accessToken: TOKEN };
  const repo = { type: "model", name: `${USER}/js-client-test` };

  const me = await whoAmI({ credentials, hubUrl });
  assert(me.name === USER, `whoAmI name ${me.name}`);
  assert(!(await repoExists({ repo, hubUrl, accessToken: TOKEN })), "repo absent before create");

  await createRepo({ repo, accessToken: TOKEN, hubUrl });
  assert(await repoExists({ repo, hubUrl, accessToken: TOKEN }), "repo exists after create");

  const text = Buffer.from("hello from the official client\n");
  const big = randomBytes(20 * 1024 * 1024);
  const res = await commit({
    repo,
    accessToken: TOKEN,
    hubUrl,
    title: "Add a text file and a 20 MiB binary",
    operations: [
      { operation: "addOrUpdate", path: "notes/hello.txt", content: new Blob([text]) },
      { operation: "addOrUpdate", path: "ckpt/model.safetensors", content: new Blob([big]) },
    ],
  });
  assert(res && res.commit && /^[0-9a-f]{40}$/.test(res.commit.oid), "commit oid: " +
    JSON.stringify(res));

  const paths = [];
  for await (const e of listFiles({ repo, recursive: true, hubUrl, accessToken: TOKEN })) {
    paths.push(`${e.type}:${e.path}`);
    if (e.path === "ckpt/model.safetensors") {
      assert(e.lfs && e.lfs.oid === sha256(big) && e.lfs.size === big.length, "lfs entry");
    }
  }
  for (const want of ["file:notes/hello.txt", "file:ckpt/model.safetensors", "directory:ckpt",
    "directory:notes", "file:.gitattributes"]) {
    assert(paths.includes(want), `listFiles has ${want}: ${paths.join(", ")}`);
  }

  const got1 = await downloadFile({ repo, path: "notes/hello.txt", hubUrl, accessToken: TOKEN });
  assert(got1, "download text");
  assert(sha256(Buffer.from(await got1.arrayBuffer())) === sha256(text), "text sha256");
  const got2 = await downloadFile({ repo, path: "ckpt/model.safetensors", hubUrl,
    accessToken: TOKEN });
  assert(got2, "download big");
  assert(sha256(Buffer.from(await got2.arrayBuffer())) === sha256(big), "big sha256");
  const none = await downloadFile({ repo, path: "nope.bin", hubUrl, accessToken: TOKEN });
  assert(none === null, "missing file gives null");

  const log = readFileSync(logPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const parts = log.filter((r) => r.route === "part_put" && r.status === 200);
  const completes = log.filter((r) => r.route === "complete" && r.status === 200);
  const batches = log.filter((r) => r.route === "lfs_batch" && r.status === 200);
  const commits = log.filter((r) => r.route === "commit" && r.status === 200);
  assert(parts.length === 4, `4 part PUTs, got ${parts.length}`);
  assert(parts.every((r) => r.auth === false), "no Authorization on part PUTs");
  assert(completes.length === 1 && completes[0].auth === false, "one completion, no auth");
  assert(batches.length >= 1 && commits.length === 1, "batch and commit calls");
  const partBytes = parts.reduce((a, r) => a + r.bytes_in, 0);
  assert(partBytes === big.length, `part bytes ${partBytes}`);
  console.log(`ok: official client @huggingface/hub: ${log.length} requests, ` +
    `${parts.length} parts, commit ${res.commit.oid}`);
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
