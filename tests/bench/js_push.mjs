// The official JS client (@huggingface/hub, pinned in tests/hub/package.json) doing the commits a
// benchmark scenario asks for, so bench.py can time it against ckptpushd on the same hub.
// Owns: one repo creation and N commits, each of files read lazily from disk (file: URLs).
// Input: argv[2] is a JSON file {hubUrl, token, repo, useXet, commits: [[[pathInRepo,
// localPath]...]...]}; useXet (default false: the LFS path) is commit()'s option of that name.
// Output: one JSON line {seconds: [...per commit], oids: [...]} on stdout. Main thread only.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

// the client is installed under tests/hub (npm ci --prefix tests/hub), not next to this file
const req = createRequire(new URL("../hub/package.json", import.meta.url));
const hubLib = await import(pathToFileURL(req.resolve("@huggingface/hub")).href);
const { createRepo, commit } = hubLib;

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const repo = { type: "model", name: spec.repo };
const common = { repo, accessToken: spec.token, hubUrl: spec.hubUrl };
await createRepo({ ...common, private: true });
const seconds = [];
const oids = [];
for (const [i, files] of spec.commits.entries()) {
  const t0 = process.hrtime.bigint();
  const res = await commit({
    ...common,
    title: `bench commit ${i + 1}`,
    useXet: spec.useXet ?? false,
    operations: files.map(([path, local]) => ({
      operation: "addOrUpdate",
      path,
      content: pathToFileURL(local),
    })),
  });
  seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
  oids.push(res.commit.oid);
}
console.log(JSON.stringify({ seconds, oids }));
