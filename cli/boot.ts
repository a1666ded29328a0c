/**
 * The CLI's first module (the bundle's entry, scripts/bundle.mjs). For what looks like a `tbuild run
 * -d` by root (real, or of tbuild's user namespace), it starts the container's monitor
 * (runtime/monitor-main.ts) before anything else is loaded, so that the monitor's Node starts
 * beside this one's while the image is resolved and the container recorded; runtime/monitor.ts
 * (PendingMonitor.take) hands it the container. A wrong guess costs a monitor that finds nothing
 * on its channel and ends with this process. Then the CLI.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** Where runtime/monitor.ts looks for it (EARLY_MONITOR). */
const EARLY_MONITOR = Symbol.for("tbuild.earlyMonitor");

/** `run` with `-d`, `--detach`, or `d` among short flags: a guess, made before parsing. */
function looksDetached(words: readonly string[]): boolean {
  const at = words.findIndex((w) => w !== "--debug");
  if (words[at] !== "run") return false;
  return words.some((w) => w === "--detach" || w === "--detach=true" || /^-[A-Za-z]*d[A-Za-z]*$/.test(w));
}

if (process.getuid?.() === 0 && looksDetached(process.argv.slice(2))) {
  // As PendingMonitor.spawn starts one: the outer tbuild's lifeline is not this monitor's.
  const { TBUILD_USERNS_LIFELINE_FD: _lifeline, ...env } = process.env;
  const child = spawn(
    process.execPath,
    ["--min-semi-space-size=16", fileURLToPath(new URL("./monitor-main.js", import.meta.url))],
    { stdio: ["ignore", "ignore", "ignore", "pipe"], detached: true, cwd: "/", env },
  );
  child.on("error", () => {});
  child.stdio[3]?.on("error", () => {});
  child.unref();
  (child.stdio[3] as { unref?: () => void } | null)?.unref?.();
  (globalThis as Record<symbol, unknown>)[EARLY_MONITOR] = child;
}
await import("./main.js");
