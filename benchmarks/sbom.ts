/**
 * The SBOM of a Debian image with python3 (issue 17): how long scanning the image's filesystem and
 * writing its SPDX document take, beside the build of that image.
 *
 * The base is `debian:bookworm-slim` as test/helpers/debian-image.ts makes it (mmdebstrap, cached
 * in /var/tmp). The image is `RUN apt-get update && apt-get install -y --no-install-recommends
 * python3` on it, built RUNS times with --no-cache (the apt step downloads from Debian's mirror
 * each time), timed whole. The SBOM is then made RUNS times, each in a fresh child process (no
 * cache of an earlier scan): the snapshotter's prepareImage (the layers are unpacked already by
 * the build: this only finds them), then the scan, the document and its JSON, timed apart.
 * Medians are printed. Target: the SBOM ≤ 0.5 s and ≤ 5 % of the build's wall time.
 *
 *   node_modules/.bin/node benchmarks/sbom.ts      (after `npm run build`; needs root for mmdebstrap)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const TARGET_MS = 500;
const TARGET_SHARE = 0.05;
const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const dist = (module: string) => new URL(`../dist/${module}`, import.meta.url).href;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, process.argv[4]!);
} else {
  await main();
}

/** One SBOM in this process: prints the times of its parts and what it found. */
async function child(storeRoot: string, name: string): Promise<void> {
  const sbom: typeof import("../attest/sbom/index.js") = await import(dist("attest/sbom/index.js"));
  const { openStore }: typeof import("../oci/store/index.js") = await import(dist("oci/store/index.js"));
  const { readImage }: typeof import("../oci/image.js") = await import(dist("oci/image.js"));
  const { Snapshotter }: typeof import("../worker/snapshot/index.js") = await import(
    dist("worker/snapshot/index.js")
  );
  const start = performance.now();
  const store = await openStore(storeRoot);
  const record = await store.images.get(name);
  if (!record) throw new Error(`no image ${name}`);
  const layers = await new Snapshotter(store.root, store.content).prepareImage(
    await readImage(store.content, record.descriptor),
  );
  const prepared = performance.now();
  const scan = await sbom.scanFilesystem(sbom.layersFilesystem(layers));
  const json = JSON.stringify(
    sbom.spdxDocument([{ name, kind: "image", scan }], { name, toolVersion: "bench", created: new Date(0) }),
  );
  const done = performance.now();
  process.stdout.write(
    JSON.stringify({
      prepareMs: prepared - start,
      sbomMs: done - prepared,
      packages: scan.packages.length,
      bytes: json.length,
    }),
  );
}

async function main(): Promise<void> {
  const { makeDockerDebianSlim } = await import("./lib/test-helpers.ts");
  const work = mkdtempSync(join(tmpdir(), "tbuild-bench-sbom-"));
  try {
    const store = join(work, "store");
    const env = { ...process.env, TBUILD_ROOT: store };
    const baseContext = join(work, "base");
    const context = join(work, "context");
    spawnSync("mkdir", ["-p", baseContext, context]);
    await makeDockerDebianSlim(store, "debian:bookworm-slim", baseContext);
    writeFileSync(
      join(context, "Dockerfile"),
      "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends python3\n",
    );
    const builds: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const start = performance.now();
      const built = spawnSync(tbuild, ["build", "-q", "--no-cache", "-t", "bench-python", context], { env });
      if (built.status !== 0) throw new Error(`the build failed: ${built.stderr}`);
      builds.push(performance.now() - start);
    }
    const runs: { prepareMs: number; sbomMs: number; packages: number; bytes: number }[] = [];
    for (let i = 0; i < RUNS; i++) {
      const ran = spawnSync(
        process.execPath,
        [fileURLToPath(import.meta.url), "--child", store, "bench-python"],
        {
          encoding: "utf8",
        },
      );
      if (ran.status !== 0) throw new Error(`the SBOM failed: ${ran.stderr}`);
      runs.push(JSON.parse(ran.stdout));
    }
    const build = median(builds);
    const sbomMs = median(runs.map((r) => r.sbomMs));
    const prepareMs = median(runs.map((r) => r.prepareMs));
    const share = (sbomMs + prepareMs) / build;
    console.log(
      `build of Debian + python3 (--no-cache): ${build.toFixed(0)} ms (runs: ${builds.map((b) => b.toFixed(0)).join(", ")})`,
    );
    console.log(
      `SBOM: prepareImage ${prepareMs.toFixed(0)} ms + scan and document ${sbomMs.toFixed(0)} ms (runs: ${runs.map((r) => r.sbomMs.toFixed(0)).join(", ")}); ${runs[0]!.packages} packages, ${runs[0]!.bytes} bytes of JSON`,
    );
    console.log(
      `SBOM / build: ${(share * 100).toFixed(1)} %  (targets: ≤ ${TARGET_MS} ms: ${sbomMs + prepareMs <= TARGET_MS ? "met" : "NOT met"}; ≤ ${TARGET_SHARE * 100} %: ${share <= TARGET_SHARE ? "met" : "NOT met"})`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
