import type { BuildSummary } from "../../build/events.js";
import { formatSize } from "../store.js";

/** `built in 3.2s: 2 step(s) ran, 3 cached; image sha256:… (4.26MB) named docker.io/library/app:1` */
export function summaryLine(summary: BuildSummary, elapsedMs: number): string {
  return (
    `built in ${(elapsedMs / 1000).toFixed(1)}s: ${summary.ran} step(s) ran, ${summary.cached} cached; ` +
    `image ${summary.digest} (${formatSize(summary.size)})` +
    (summary.names.length ? ` named ${summary.names.join(", ")}` : "") +
    "\n"
  );
}
