/**
 * A cache mount travelling (issue 18, "Speed"): `tbuild cache export --id ID -o X.tar.zst` then
 * `tbuild cache import -i X.tar.zst` into an empty store, timed together, against `tar -C DATA -c .
 * | zstd -q -o Y.tar.zst` then `zstd -d -c Y.tar.zst | tar -C OUT -x`, timed together; each side's
 * previous output removed untimed. The mount: 20,000 files, 200 MB, in 100 directories, half
 * compressible text and half random bytes, the same on every run. Runs alternate A B A B after a
 * warm-up pair; medians and the ratio are printed. Target ≤ 1.2.
 *
 *   node_modules/.bin/node benchmarks/cache-mounts.ts   (after `npm run build`)
 *
 * RUNS (default 7) sets the runs; BENCH_DIR the directory (default the system's temp directory):
 * a tmpfs measures the programs rather than the disk.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cacheMountKey } from "../dist/worker/cache-mounts/store.js";
import { check } from "./lib/busybox.ts";
import { median, timed } from "./lib/podman.ts";

const RUNS = Number(process.env.RUNS ?? 7);
const FILES = 20_000;
const BYTES = 200_000_000;
const DIRS = 100;
const ID = "bench-cache";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "tbuild-bench-cache-mounts-"));

/** Deterministic bytes: a sha256 counter stream (random-looking), or words from it (text). */
function content(index: number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let block = 0; at < size; block++) {
    const digest = createHash("sha256").update(`${index}:${block}`).digest();
    at += digest.copy(out, at);
  }
  if (index % 2 === 0) return out;
  // Text: words picked by those bytes, as source files and package metadata are.
  const text = Buffer.allocUnsafe(size + 16);
  let written = 0;
  for (let i = 0; written < size; i++) written += text.write(WORDS[out[i % size]! % WORDS.length]!, written);
  return text.subarray(0, size);
}

const WORDS = [
  "const ",
  "require(",
  "module.",
  "exports ",
  "function ",
  "return ",
  "=> ",
  "{\n",
  "}\n",
  "name",
];

/** The mount's tree under `dir`: FILES files of BYTES in all, sizes varying around the mean. */
function makeTree(dir: string): void {
  const mean = BYTES / FILES;
  for (let d = 0; d < DIRS; d++) mkdirSync(join(dir, `pkg-${d}`, "lib"), { recursive: true });
  for (let i = 0; i < FILES; i++) {
    const size = Math.round(mean * (0.25 + (1.5 * ((i * 7919) % 1000)) / 1000));
    writeFileSync(join(dir, `pkg-${i % DIRS}`, i % 3 === 0 ? "lib" : "", `file-${i}.js`), content(i, size));
  }
}

function sh(script: string): number {
  return timed("sh", ["-c", script], process.env);
}

try {
  const seed = join(work, "seed");
  const key = cacheMountKey(ID);
  const data = join(seed, key);
  makeTree(data);
  writeFileSync(
    join(seed, "tbuild-cache-mounts.json"),
    `${JSON.stringify({ version: 1, mounts: [{ key, id: ID, sharing: "shared", target: "/cache" }] })}\n`,
  );
  const source = { ...process.env, TBUILD_ROOT: join(work, "source-store") };
  check(spawnSync(tbuild, ["cache", "import", "-i", seed], { env: source }), "tbuild cache import (seed)");

  const archive = join(work, "x.tar.zst");
  const target = join(work, "target-store");
  const tbuildRun = () => {
    rmSync(target, { recursive: true, force: true });
    rmSync(archive, { force: true });
    const env = { ...process.env, TBUILD_ROOT: target };
    return (
      timed(tbuild, ["cache", "export", "--id", ID, "-o", archive], source) +
      timed(tbuild, ["cache", "import", "-i", archive], env)
    );
  };
  const peerArchive = join(work, "y.tar.zst");
  const out = join(work, "out");
  const peerRun = () => {
    rmSync(out, { recursive: true, force: true });
    rmSync(peerArchive, { force: true });
    return (
      sh(`tar -C '${data}' -c . | zstd -q -o '${peerArchive}'`) +
      sh(`mkdir '${out}' && zstd -d -c '${peerArchive}' | tar -C '${out}' -x`)
    );
  };
  const times = { tbuild: [] as number[], peer: [] as number[] };
  for (let i = 0; i < 1 + RUNS; i++) {
    const a = tbuildRun();
    const b = peerRun();
    if (i > 0) {
      times.tbuild.push(a);
      times.peer.push(b);
    }
  }
  const line = (label: string, values: number[]) =>
    `${label.padEnd(44)} median ${median(values).toFixed(0)} ms (min ${Math.min(...values).toFixed(0)}, max ${Math.max(...values).toFixed(0)})`;
  console.log(
    `${FILES} files, ${BYTES / 1e6} MB, in ${work}; runs: ${RUNS} each, alternating, after a warm-up`,
  );
  console.log(line("tbuild cache export + cache import", times.tbuild));
  console.log(line("tar -c | zstd + zstd -d | tar -x", times.peer));
  const ratio = median(times.tbuild) / median(times.peer);
  console.log(`ratio tbuild/peer: ${ratio.toFixed(2)} (target ≤ 1.20: ${ratio <= 1.2 ? "met" : "NOT met"})`);
  process.exitCode = ratio <= 1.2 ? 0 : 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
