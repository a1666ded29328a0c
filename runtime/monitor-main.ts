/**
 * A detached container's monitor process (runtime/monitor.ts): an entry point of its own (in the
 * bundle, scripts/bundle.mjs), so that it loads what runs a container and nothing of the CLI. Its
 * container comes on descriptor 3; it exits when the container has ended.
 */
import { enableCompileCache } from "node:module";
import { tmpdir } from "node:os";
import { compileCacheDir } from "../cli/compile-cache.js";
import { runMonitor } from "./monitor.js";

if (!process.env.NODE_COMPILE_CACHE) {
  const dir = compileCacheDir(process.env, tmpdir(), process.getuid?.() ?? -1);
  if (dir !== undefined) enableCompileCache(dir);
}
// A hangup is no reason to stop: the container runs on. SIGTERM and SIGINT stop it (runMonitor).
process.on("SIGHUP", () => {});
process.exitCode = await runMonitor(process.env);
