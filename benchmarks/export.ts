/**
 * Exporting a 1 GiB layer: how fast `exportImage` writes an OCI archive while compressing the layer,
 * and how much memory it needs, beside `tar -c DIR | gzip` and `tar -c DIR | zstd` of the same tree.
 *
 * The tree (cached in /var/tmp/tbuild-bench) is half incompressible (random bytes) and half
 * compressible (text of random words), in large and small files. It is packed into a fresh store
 * twice, as an uncompressed layer and as a gzip one. Each case then runs in a child process (so its
 * peak RSS is its own, read from VmHWM), RUNS times alternating with the shell pipelines:
 *
 *   gzip        type=oci,compression=gzip from the uncompressed layer
 *   zstd        type=oci,compression=zstd,force-compression=true from the uncompressed layer
 *   gzip→zstd   type=oci,compression=zstd,force-compression=true from the gzip layer (gunzip, then zstd)
 *   again       the zstd export once more: the conversion is remembered, only the archive is written
 *
 * Each export starts without remembered conversions (the store's exporters/ directory is removed),
 * except "again". Medians are printed, as MB/s of the uncompressed tree (10^6 bytes), and the
 * largest peak RSS. Target: peak RSS ≤ 250 MB.
 *
 *   node_modules/.bin/node benchmarks/export.ts      (after `npm run build`)
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

type Exporters = typeof import("../exporters/index.js");
type Oci = typeof import("../oci/index.js");

/** BENCH_RUNS=1 for a quick look; medians want at least 3. */
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const RSS_TARGET_MB = 250;
const TOTAL_BYTES = 1 << 30;
const CACHE = "/var/tmp/tbuild-bench";
const TREE = join(CACHE, "export-tree-v1");
const dist = (module: string) => new URL(`../dist/${module}`, import.meta.url).href;

interface ChildResult {
  seconds: number;
  peakRssMb: number;
  digest: string;
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, JSON.parse(process.argv[4]!), JSON.parse(process.argv[5]!), process.argv[6]!);
} else {
  await main();
}

/** One export in this process: prints its time and this process's peak RSS. */
async function child(storeRoot: string, layer: unknown, request: unknown, dest: string): Promise<void> {
  const exporters: Exporters = await import(dist("exporters/index.js"));
  const oci: Oci = await import(dist("oci/index.js"));
  const store = await oci.openStore(storeRoot);
  const result = { layers: [layer] } as Parameters<Exporters["exportImage"]>[2];
  const config = {
    architecture: "amd64",
    os: "linux",
    config: {},
    rootfs: { type: "layers" as const, diff_ids: [] },
    history: [{ created_by: "COPY tree /", comment: "benchmark" }],
  };
  const started = performance.now();
  const image = await exporters.assembleImage(store.content, { result, config }, { sourceDateEpoch: 0 });
  const outcome = await exporters.exportImage(store, image, result, {
    ...(request as Parameters<Exporters["exportImage"]>[3]),
    dest,
  });
  const seconds = (performance.now() - started) / 1000;
  const status = readFileSync("/proc/self/status", "utf8");
  const peakKb = Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]);
  const out: ChildResult = { seconds, peakRssMb: peakKb / 1024, digest: outcome.digest };
  process.stdout.write(JSON.stringify(out));
}

async function main(): Promise<void> {
  const zstdAvailable = spawnSync("which", ["zstd"]).status === 0;
  makeTree();
  const work = mkdtempSync(join(tmpdir(), "tbuild-bench-export-"));
  try {
    const storeRoot = join(work, "store");
    console.log("packing the tree into a fresh store (uncompressed, then gzip)...");
    const oci: Oci = await import(dist("oci/index.js"));
    const store = await oci.openStore(storeRoot);
    const plain = await oci.writeLayer(store.content, oci.packDirectory(TREE), {
      compression: "uncompressed",
    });
    const gzipped = await oci.writeLayer(store.content, oci.packDirectory(TREE), { compression: "gzip" });
    const treeBytes = plain.descriptor.size;
    console.log(
      `tree: ${(treeBytes / 1e6).toFixed(0)} MB as a tar; gzip layer ${(gzipped.descriptor.size / 1e6).toFixed(0)} MB`,
    );

    const output = join(work, "out.tar");
    const exportCase =
      (layer: unknown, request: object, keepConversions = false) =>
      () => {
        if (!keepConversions) rmSync(join(storeRoot, "exporters"), { recursive: true, force: true });
        rmSync(output, { force: true });
        const ran = spawnSync(
          process.execPath,
          [
            fileURLToPath(import.meta.url),
            "--child",
            storeRoot,
            JSON.stringify(layer),
            JSON.stringify({ type: "oci", ...request }),
            output,
          ],
          { encoding: "utf8", maxBuffer: 1 << 20 },
        );
        if (ran.status !== 0) throw new Error(`export failed: ${ran.stderr}`);
        return JSON.parse(ran.stdout) as ChildResult;
      };
    const pipelineCase = (compressor: string) => () => {
      rmSync(output, { force: true });
      const started = performance.now();
      execFileSync("sh", ["-c", `tar -C "$1" -cf - . | ${compressor} > "$2"`, "sh", TREE, output]);
      return { seconds: (performance.now() - started) / 1000, peakRssMb: Number.NaN, digest: "" };
    };

    const cases: [string, () => ChildResult][] = [
      ["tbuild type=oci compression=gzip", exportCase(plain, { compression: "gzip" })],
      ["tar -c | gzip", pipelineCase("gzip")],
    ];
    if (zstdAvailable) {
      cases.push(
        [
          "tbuild type=oci compression=zstd force",
          exportCase(plain, { compression: "zstd", forceCompression: true }),
        ],
        ["tar -c | zstd", pipelineCase("zstd -q")],
        [
          "tbuild gzip layer → zstd force",
          exportCase(gzipped, { compression: "zstd", forceCompression: true }),
        ],
        [
          "tbuild zstd again (remembered)",
          exportCase(plain, { compression: "zstd", forceCompression: true }, true),
        ],
      );
    } else {
      console.log("zstd is not installed (Debian package zstd): the zstd cases are left out");
    }
    const results = new Map<string, ChildResult[]>(cases.map(([name]) => [name, []]));
    for (let run = 1; run <= RUNS; run++) {
      for (const [name, fn] of cases) {
        const r = fn();
        results.get(name)!.push(r);
        const rss = Number.isNaN(r.peakRssMb) ? "" : `, peak RSS ${r.peakRssMb.toFixed(0)} MB`;
        console.log(`  run ${run} ${name}: ${r.seconds.toFixed(2)} s${rss}`);
      }
    }

    console.log(`\nexporting a ${(treeBytes / 1e6).toFixed(0)} MB layer (medians of ${RUNS} runs):`);
    let worstRss = 0;
    for (const [name, runs] of results) {
      const seconds = median(runs.map((r) => r.seconds));
      const rss = Math.max(...runs.map((r) => r.peakRssMb));
      if (!Number.isNaN(rss)) worstRss = Math.max(worstRss, rss);
      const rssText = Number.isNaN(rss) ? "" : `   peak RSS ${rss.toFixed(0)} MB`;
      console.log(
        `  ${name.padEnd(40)} ${seconds.toFixed(2).padStart(7)} s  ${(treeBytes / 1e6 / seconds).toFixed(0).padStart(5)} MB/s${rssText}`,
      );
    }
    const ok = worstRss <= RSS_TARGET_MB;
    console.log(
      `peak RSS ${worstRss.toFixed(0)} MB (target ≤ ${RSS_TARGET_MB} MB): ${ok ? "met" : "MISSED"}`,
    );
    if (!ok) process.exitCode = 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * 1 GiB of files, made once: half random bytes (large files and small ones), half text of random
 * words (which gzip shrinks about threefold). Made in a partial directory renamed when complete.
 */
function makeTree(): void {
  if (existsSync(join(TREE, ".complete"))) return;
  console.log(`making ${TREE} (1 GiB, once; later runs reuse it)`);
  const partial = `${TREE}.partial`;
  rmSync(partial, { recursive: true, force: true });
  const half = TOTAL_BYTES / 2;
  const fill = (dir: string, budget: number, make: (size: number) => Buffer) => {
    mkdirSync(join(partial, dir), { recursive: true });
    let left = budget;
    let n = 0;
    // A quarter of the budget in small files (1–64 KiB, spread over subdirectories), the rest in 16 MiB files.
    let small = budget / 4;
    while (small > 0) {
      const size = Math.min(small, 1024 + Math.floor(Math.random() * 63 * 1024));
      const sub = join(partial, dir, `d${Math.floor(n / 200)}`);
      if (n % 200 === 0) mkdirSync(sub, { recursive: true });
      writeFileSync(join(sub, `f${n++}`), make(size));
      small -= size;
      left -= size;
    }
    while (left > 0) {
      const size = Math.min(left, 16 << 20);
      writeFileSync(join(partial, dir, `big${n++}`), make(size));
      left -= size;
    }
  };
  fill("random", half, (size) => randomBytes(size));
  const words = Array.from({ length: 2000 }, () =>
    randomBytes(2 + Math.floor(Math.random() * 6)).toString("hex"),
  );
  fill("text", half, (size) => {
    const out = Buffer.alloc(size);
    let at = 0;
    while (at < size) {
      const word = words[Math.floor(Math.random() * words.length)]!;
      at += out.write(Math.random() < 0.1 ? `${word}\n` : `${word} `, at);
    }
    return out;
  });
  writeFileSync(join(partial, ".complete"), "");
  mkdirSync(CACHE, { recursive: true });
  renameSync(partial, TREE);
}
