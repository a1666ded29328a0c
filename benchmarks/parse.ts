/**
 * How long `tbuild debug parse` takes on a large Dockerfile: 10,000 instructions, many of them
 * continued over several lines, with comments, JSON forms and heredocs. Runs the real CLI as a
 * process (start-up included) several times and prints the median wall time.
 *
 *   node_modules/.bin/node benchmarks/parse.ts      (after `npm run build`)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const INSTRUCTIONS = 10_000;
const RUNS = 7;
const BUDGET_MS = 1_000;

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));

/** One instruction of several kinds in turn; most span several lines. */
function instruction(i: number): string {
  switch (i % 8) {
    case 0:
      return `# step ${i}\nRUN apt-get update && \\\n    apt-get install -y package-${i} \\\n    && rm -rf /var/lib/apt/lists/*\n`;
    case 1:
      return `ENV NAME_${i}="value ${i}" \\\n    OTHER_${i}=plain\\ value\n`;
    case 2:
      return `COPY --chown=app:app --from=build src/${i}/ \\\n     /app/${i}/\n`;
    case 3:
      return `CMD ["/bin/app", "--flag=${i}", \\\n     "--verbose"]\n`;
    case 4:
      return `LABEL org.example.step=${i} \\\n      org.example.note="continued \\\n      across lines"\n`;
    case 5:
      return `RUN <<EOF\nset -e\necho step ${i}\nEOF\n`;
    case 6:
      return `ARG VERSION_${i}=1.${i}\n`;
    default:
      return `WORKDIR /work/${i}\n`;
  }
}

function dockerfile(): string {
  const parts = ["# syntax=docker/dockerfile:1\nFROM debian:12 AS build\n"];
  for (let i = 1; i < INSTRUCTIONS; i++) parts.push(instruction(i));
  return parts.join("");
}

const dir = mkdtempSync(join(tmpdir(), "tbuild-parse-bench-"));
try {
  const file = join(dir, "Dockerfile");
  const text = dockerfile();
  writeFileSync(file, text);
  const lines = text.split("\n").length - 1;

  const times: number[] = [];
  let instructionsPrinted = 0;
  for (let run = 0; run < RUNS; run++) {
    const start = process.hrtime.bigint();
    const result = spawnSync(tbuild, ["debug", "parse", file], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
    if (result.status !== 0) {
      process.stderr.write(result.stderr);
      throw new Error(`tbuild debug parse exited with ${result.status}`);
    }
    instructionsPrinted = result.stdout.split("\n").length - 1;
    times.push(elapsed);
  }
  if (instructionsPrinted !== INSTRUCTIONS) {
    throw new Error(`expected ${INSTRUCTIONS} instructions in the dump, got ${instructionsPrinted}`);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  process.stdout.write(
    `tbuild debug parse: ${INSTRUCTIONS} instructions, ${lines} lines, ${(text.length / 1024).toFixed(0)} KiB\n` +
      `runs (ms): ${times.map((t) => t.toFixed(0)).join(" ")}\n` +
      `median: ${median.toFixed(0)} ms — ${median < BUDGET_MS ? "under" : "OVER"} the ${BUDGET_MS} ms budget\n`,
  );
  if (median >= BUDGET_MS) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
