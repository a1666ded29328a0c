// Bundles tbuild's compiled modules (dist/) into a few files under dist/bundle/cli/, which
// bin/tbuild runs: Node then loads a handful of modules instead of some two hundred, which takes
// tens of milliseconds off every command. The ES module packages go in too (each file Node does
// not have to find and resolve saves time); proper-lockfile, CommonJS that requires Node's own
// modules, chevrotain, loaded from its own single-file build (frontend/syntax/chevrotain.ts), and
// ssh2, CommonJS with optional native parts (`cpu-features`, `sshcrypto.node`) that no bundle can
// hold and that it uses only when the install built them, and @napi-rs/xattr, which loads its
// platform's prebuilt binary, stay in node_modules. Every file lands
// three directories below the package root, as dist/cli/commands/*.js do, so that paths made
// relative to import.meta.url (the package root, the seccomp profile) resolve the same.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { build } from "esbuild";

// Chunks are named by their content: the last build's would otherwise pile up beside these.
rmSync("dist/bundle", { recursive: true, force: true });

// What a parsed Dockerfile depends on besides its text (frontend/syntax/parse-cache.ts): the
// parser's modules and chevrotain's version.
const parser = createHash("sha256");
for (const name of readdirSync("dist/frontend/syntax")
  .filter((n) => n.endsWith(".js"))
  .sort()) {
  parser
    .update(`${name}\0`)
    .update(readFileSync(`dist/frontend/syntax/${name}`))
    .update("\0");
}
parser.update(JSON.parse(readFileSync("node_modules/chevrotain/package.json", "utf8")).version);

await build({
  // The port forwarder of `tbuild run -p` is a process of its own (runtime/network.ts finds it
  // beside), and an unpack's file system calls have a thread of their own (worker/cache-mounts/tree-calls.ts).
  entryPoints: {
    main: "dist/cli/boot.js",
    forwarder: "dist/runtime/forwarder.js",
    "monitor-main": "dist/runtime/monitor-main.js",
    "tree-writer-thread": "dist/worker/cache-mounts/tree-writer-thread.js",
  },
  outdir: "dist/bundle/cli",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node24",
  external: ["proper-lockfile", "chevrotain", "ssh2", "@napi-rs/xattr"],
  chunkNames: "[name]-[hash]",
  define: { __TBUILD_PARSER_ID__: JSON.stringify(parser.digest("hex").slice(0, 32)) },
  logLevel: "warning",
});
