/**
 * What every test of the oracle starts with: a BuildKit daemon (buildkit.ts) and a tbuild store,
 * both given the same base images, and the judge of one case: the differences between the two
 * builds (compare.ts) that no kept rule (kept.ts) explains.
 *
 * The base images are the same root filesystems in both: busybox as the scenario suite makes it
 * (Docker's busybox accounts), and an `alpine` stand-in (the same, with /etc/alpine-release).
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { makeScenarioBusyboxRootfs } from "../build/buildkit-scenarios-harness.js";
import { tbuild } from "../helpers/cli.js";
import { makeDockerDebianSlim } from "../helpers/debian-image.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import { type BuildKitOracle, startBuildKit } from "./buildkit.js";
import {
  type Built,
  buildWithBuildKit,
  buildWithTbuild,
  contentOnly,
  differences,
  type OracleCase,
} from "./compare.js";
import { explainedBy, KEPT } from "./kept.js";

export interface OracleSetup {
  oracle: BuildKitOracle;
  /** The tbuild store (TBUILD_ROOT) holding the base images. */
  store: string;
}

/** Starts the daemon and imports the base images into it and into a new store under `work`. */
export async function startOracleWithBaseImages(work: string): Promise<OracleSetup> {
  const started = startBuildKit();
  try {
    const busybox = await makeScenarioBusyboxRootfs(path.join(work, "busybox-rootfs"));
    const alpine = path.join(work, "alpine-rootfs");
    cpSync(busybox, alpine, { recursive: true, verbatimSymlinks: true });
    writeFileSync(path.join(alpine, "etc", "alpine-release"), "3.20.3\n");
    const store = path.join(work, "store");
    for (const [rootfs, name] of [
      [busybox, "busybox:latest"],
      [alpine, "alpine:latest"],
    ] as const) {
      const imported = tbuild(["import", rootfs, name, "--change", 'CMD ["sh"]'], {
        env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
      });
      if (imported.status !== 0) throw new Error(`tbuild import of ${name} failed: ${imported.stderr}`);
    }
    const oracle = await started;
    oracle.importRootfs(busybox, "busybox:latest", ['CMD ["sh"]']);
    oracle.importRootfs(alpine, "alpine:latest", ['CMD ["sh"]']);
    return { oracle, store };
  } catch (err) {
    // A daemon that started is stopped, whatever failed after.
    await started.then((oracle) => oracle.stop()).catch(() => {});
    throw err;
  }
}

/**
 * The differences no kept rule explains (empty: the builders agree), as text; the rules that
 * explained the others are counted in `used`. A case BuildKit fails to build is judged by the
 * kept rules that name it (`buildKitFails`); any other failure of either builder is thrown.
 */
export async function judge(
  setup: OracleSetup,
  c: OracleCase,
  dir: string,
  used: Map<string, number>,
): Promise<string[]> {
  const ours = await buildWithTbuild(c, setup.store, dir);
  let theirs: Built;
  try {
    theirs = await buildWithBuildKit(c, setup.oracle, dir);
  } catch (err) {
    const rule = KEPT.find((k) => k.buildKitFails?.cases.includes(c.name));
    if (!rule?.buildKitFails?.error.test(String(err))) throw err;
    used.set(rule.id, (used.get(rule.id) ?? 0) + 1);
    return [];
  }
  const dockerfile = readFileSync(path.resolve(c.context, c.dockerfile ?? "Dockerfile"), "utf8");
  const ignoreFile = path.join(c.context, ".dockerignore");
  const dockerignore = existsSync(ignoreFile) ? readFileSync(ignoreFile, "utf8") : "";
  return unexplained(ours, theirs, { dockerfile, dockerignore }, used);
}

/** What came of building a case with both builders, where either may fail. */
export type Outcome =
  | { kind: "compared"; differences: string[] }
  | { kind: "both failed"; ours: string; theirs: string }
  | { kind: "one failed"; failed: "tbuild" | "BuildKit"; error: string };

/**
 * Builds the case with both and judges it as `judge` does, but a failure is an outcome, not an
 * error: a Dockerfile both builders refuse (or fail a step of) agrees. Each failure is given by its
 * first error line.
 */
export async function outcome(
  setup: OracleSetup,
  c: OracleCase,
  dir: string,
  used: Map<string, number>,
): Promise<Outcome> {
  const firstError = (err: unknown) =>
    String(err)
      .split("\n")
      .find((line) => /ERROR|failed to/.test(line) && !line.startsWith("Error: "))
      ?.trim() ?? String(err).split("\n")[0]!;
  const [ours, theirs] = [
    await buildWithTbuild(c, setup.store, dir).catch((err: unknown) => ({ error: firstError(err) })),
    await buildWithBuildKit(c, setup.oracle, dir).catch((err: unknown) => ({ error: firstError(err) })),
  ];
  if ("error" in ours && "error" in theirs)
    return { kind: "both failed", ours: ours.error, theirs: theirs.error };
  if ("error" in ours) return { kind: "one failed", failed: "tbuild", error: ours.error };
  if ("error" in theirs) return { kind: "one failed", failed: "BuildKit", error: theirs.error };
  const dockerfile = readFileSync(path.resolve(c.context, c.dockerfile ?? "Dockerfile"), "utf8");
  return { kind: "compared", differences: unexplained(ours, theirs, { dockerfile, dockerignore: "" }, used) };
}

/**
 * The differences between two results of a case (its Dockerfile and .dockerignore) that no kept
 * rule explains, counting the rules used.
 */
export function unexplained(
  ours: Built,
  theirs: Built,
  source: { dockerfile: string; dockerignore: string },
  used: Map<string, number>,
  unstable: ReadonlySet<string> = new Set(),
): string[] {
  const left: string[] = [];
  for (const d of differences(ours, theirs)) {
    if (unstable.has(d.key) && contentOnly(d)) continue;
    const rules = explainedBy(d, source.dockerfile, source.dockerignore);
    for (const rule of rules) used.set(rule.id, (used.get(rule.id) ?? 0) + 1);
    if (rules.length === 0) left.push(d.text);
  }
  return left;
}

/**
 * Gives both builders `debian:bookworm-slim` as the tests make it (test/helpers/debian-image.ts):
 * made in tbuild's store, saved as a Docker archive and loaded into the daemon, so that both start
 * from the same layers and config.
 */
export async function giveDebianSlim(setup: OracleSetup, work: string): Promise<void> {
  const name = "debian:bookworm-slim";
  const context = path.join(work, "debian-context");
  mkdirSync(context, { recursive: true });
  await makeDockerDebianSlim(setup.store, name, context);
  const archive = path.join(work, "debian-bookworm-slim.tar");
  const saved = tbuild(["save", "--format", "docker", "-o", archive, name], {
    env: { TBUILD_ROOT: setup.store },
  });
  if (saved.status !== 0) throw new Error(`tbuild save ${name} failed: ${saved.stderr}`);
  const loaded = setup.oracle.docker(["load", "-i", archive]);
  if (loaded.status !== 0) throw new Error(`docker load of ${name} failed: ${loaded.stderr}`);
  rmSync(archive);
}

/**
 * Judges a case whose builds are not reproducible by nature (apt's and dpkg's logs hold the time
 * of each install): BuildKit builds it a second time, without its cache, and the paths whose
 * content its two results differ in are `unstable`. Where tbuild's result differs from BuildKit's
 * first only in those paths' content, that is set aside; every other difference is judged as
 * `judge` judges it. Returns both.
 */
export async function judgeAgainstItself(
  setup: OracleSetup,
  c: OracleCase,
  dir: string,
  used: Map<string, number>,
): Promise<{ differences: string[]; unstable: string[] }> {
  const ours = await buildWithTbuild(c, setup.store, dir);
  const theirs = await buildWithBuildKit(c, setup.oracle, dir);
  const again = await buildWithBuildKit({ ...c, noCache: true }, setup.oracle, dir);
  const unstable = new Set(
    differences(again, theirs)
      .filter(contentOnly)
      .map((d) => d.key),
  );
  const dockerfile = readFileSync(path.resolve(c.context, c.dockerfile ?? "Dockerfile"), "utf8");
  return {
    differences: unexplained(ours, theirs, { dockerfile, dockerignore: "" }, used, unstable),
    unstable: [...unstable].sort(),
  };
}
