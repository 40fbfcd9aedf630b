// js_download.mjs - downloads every file of a repo from a hub with the official JS client
// (@huggingface/hub, installed in tests/hub/node_modules by `npm ci --prefix tests/hub`).
// Usage: node js_download.mjs HUB_URL TOKEN OWNER/NAME OUT_DIR [REVISION]
// (buckets/OWNER/NAME: a Storage Bucket, no revision)
// Prints one JSON object on stdout: {"<path>": "<sha256 hex>", ...}. Exit 1 on any failure.
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = process.env.CKPT_SOURCE_DIR || resolve(here, "..", "..");
const require = createRequire(join(source, "tests", "hub", "package.json"));
const hub = await import(pathToFileURL(require.resolve("@huggingface/hub")).href);

const [hubUrl, accessToken, name, outDir, revision] = process.argv.slice(2);
if (!hubUrl || !accessToken || !name || !outDir) {
    console.error("usage: node js_download.mjs HUB_URL TOKEN OWNER/NAME OUT_DIR [REVISION]");
    process.exit(2);
}
const repo = name.startsWith("buckets/") ? { type: "bucket", name: name.slice(8) } : { type: "model", name };
const result = {};
try {
    for await (const entry of hub.listFiles({ repo, recursive: true, hubUrl, accessToken, revision })) {
        if (entry.type !== "file")
            continue;
        const blob = await hub.downloadFile({ repo, path: entry.path, hubUrl, accessToken, revision });
        if (blob === null)
            throw new Error(`listed file '${entry.path}' cannot be downloaded`);
        const bytes = Buffer.from(await blob.arrayBuffer());
        if (bytes.length !== entry.size)
            throw new Error(`'${entry.path}': ${bytes.length} bytes, tree says ${entry.size}`);
        const sha = createHash("sha256").update(bytes).digest("hex");
        if (entry.lfs && entry.lfs.oid !== sha)
            throw new Error(`'${entry.path}': sha256 ${sha}, tree lfs.oid ${entry.lfs.oid}`);
        const dest = join(outDir, entry.path);
        await mkdir(dirname(dest), { recursive: true });
        await writeFile(dest, bytes);
        result[entry.path] = sha;
    }
} catch (err) {
    console.error(`js_download: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
}
process.stdout.write(JSON.stringify(result) + "\n");
