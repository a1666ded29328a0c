/**
 * How many builds a store is running, for `tbuild worker ls` and a pool's scheduler ("the least
 * busy worker"): the distinct live owners of
 *
 * - the builds' state directories (`tmp-build-PID-START-…`, worker/build-state.ts): every build
 *   in the store, local or remote, from the moment its plan is made until it ends; and
 * - claims in `<store>/running-builds/PID-START`: a remote worker process claims a slot for its
 *   client's build before the context is synced, so that two clients choosing a worker at the
 *   same moment see each other (a claim is counted under a lock and made in the same hold).
 *
 * Both name their owner process by pid and start time, so a killed build or worker stops counting
 * the moment it is gone, with nothing to clean up first; a dead claim's file is removed when seen.
 */
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { ownStart, processAlive } from "../oci/store/process-liveness.js";
import { liveBuildOwners } from "./build-state.js";

const CLAIMS_DIR = "running-builds";
const OWNER = /^(\d+)-(\d+)$/;

function ownClaim(): string {
  return `${process.pid}-${ownStart()}`;
}

async function liveClaims(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const live = await Promise.all(
    names.map(async (name) => {
      const owner = OWNER.exec(name);
      if (!owner) return undefined;
      if (await processAlive(Number(owner[1]), owner[2]!)) return name;
      await rm(path.join(dir, name), { force: true }).catch(() => {});
      return undefined;
    }),
  );
  return live.filter((name) => name !== undefined);
}

/** Builds running in the store at `storeRoot` (0 for a store that does not exist). */
export async function countRunningBuilds(storeRoot: string): Promise<number> {
  const owners = new Set([
    ...(await liveBuildOwners(storeRoot)),
    ...(await liveClaims(path.join(storeRoot, CLAIMS_DIR))),
  ]);
  return owners.size;
}

/**
 * Claims a build slot for this process until it ends (or releaseBuildSlot): resolves to the
 * builds that ran in the store before it, counted in the same hold of the lock as the claim is
 * made, so two processes claiming at once see each other.
 */
export async function claimBuildSlot(storeRoot: string): Promise<{ before: number }> {
  const dir = path.join(storeRoot, CLAIMS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { default: lockfile } = await import("proper-lockfile");
  const release = await lockfile.lock(dir, {
    realpath: false,
    stale: 10_000,
    update: 2_500,
    retries: { retries: 1_000, minTimeout: 10, maxTimeout: 200 },
  });
  try {
    const own = ownClaim();
    const owners = new Set([...(await liveBuildOwners(storeRoot)), ...(await liveClaims(dir))]);
    owners.delete(own);
    await writeFile(path.join(dir, own), "");
    return { before: owners.size };
  } finally {
    await release().catch(() => {});
  }
}

/** Gives this process's slot back (its build is over, or went to another worker). */
export async function releaseBuildSlot(storeRoot: string): Promise<void> {
  await rm(path.join(storeRoot, CLAIMS_DIR, ownClaim()), { force: true });
}
