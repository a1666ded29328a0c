/**
 * Whether a detached container's log keeps up with a fast writer: 100 MiB of 91-byte lines from
 * a real process (busybox `yes` through `head -c`), read from its pipe and written to the log
 * (runtime/logs.ts, 10 MiB parts, 3 kept), beside the same output read and thrown away. The
 * ratio is what the log costs the container's output; the MiB/s what it sustains.
 *
 *   node_modules/.bin/node benchmarks/container-log.ts   (after `npm run build`)
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LogWriter } from "../dist/runtime/logs.js";

const RUNS = 5;
const BYTES = 100 * 1024 * 1024;
const LINE = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefgh";

/** Runs the writer process, handing each chunk of its output to `sink`; resolves to the seconds taken. */
function produce(sink: (chunk: Buffer) => void): Promise<number> {
  const start = process.hrtime.bigint();
  const child = spawn("sh", ["-c", `busybox yes ${LINE} | head -c ${BYTES}`], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  child.stdout.on("data", sink);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", () => resolve(Number(process.hrtime.bigint() - start) / 1e9));
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const work = mkdtempSync(join(tmpdir(), "tbuild-bench-log-"));
try {
  const logged: number[] = [];
  const dropped: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    dropped.push(await produce(() => {}));
    const log = new LogWriter(join(work, `container-${run}.log`));
    logged.push(await produce((chunk) => log.write("stdout", chunk)));
    log.close();
  }
  const mib = BYTES / 1024 / 1024;
  console.log(
    `output thrown away: median ${median(dropped).toFixed(2)} s (${(mib / median(dropped)).toFixed(0)} MiB/s)`,
  );
  console.log(
    `output to the log:  median ${median(logged).toFixed(2)} s (${(mib / median(logged)).toFixed(0)} MiB/s)`,
  );
  console.log(`ratio ${(median(logged) / median(dropped)).toFixed(2)}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
