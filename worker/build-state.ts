/**
 * A build's state directory, `<store>/tmp-build-PID-START-RANDOM`: its RUN steps' runc state and
 * bundles, secrets, copies of cache mounts, HTTP records. The build removes it when it ends; a
 * build killed with SIGKILL (or a machine that stopped) cannot, so each directory names its owner
 * (pid and start time) in its name, made with it in one call, and the next build or prune removes
 * those whose owner is gone, with the containers runc still knows there. (Directories of earlier
 * versions, `tmp-build-XXXXXX`, name their owner in an `owner` file inside.)
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { ownStart, processAlive } from "../oci/store/process-liveness.js";

const PREFIX = "tmp-build-";
const OWNER_FILE = "owner";
/** Where the worker's RUN steps keep their runs (worker/ops/exec.ts): runInSandbox's stateDir. */
const SANDBOX_DIR = "sandbox";
/**
 * A directory without an owner file was made by a build killed before it wrote one, or is being
 * made right now: only an older one is abandoned.
 */
const UNOWNED_GRACE_MS = 60_000;

/** Where secret files live during a build: memory, not a disk. */
const SECRETS_PARENT = "/dev/shm";
const SECRETS_PREFIX = "tbuild-secrets-";

/**
 * A directory in memory (tmpfs) for this build's secret files, owned like a state directory; undefined
 * where there is no writable /dev/shm (the state directory serves then). A secret mounted by a step
 * is a file there for the step's time only, and never on a disk, in the store or under /tmp.
 */
export async function makeSecretsDir(): Promise<string | undefined> {
  const dir = path.join(
    SECRETS_PARENT,
    `${SECRETS_PREFIX}${process.pid}-${ownStart()}-${randomBytes(6).toString("hex")}`,
  );
  try {
    await mkdir(dir, { mode: 0o700 });
    return dir;
  } catch {
    return undefined;
  }
}

/** Removes the secrets directories of this user's builds that are gone (killed before they could). */
async function removeAbandonedSecrets(): Promise<void> {
  const names = await namesWithPrefix(SECRETS_PARENT, SECRETS_PREFIX).catch(() => [] as string[]);
  const uid = process.getuid?.();
  for (const name of names) {
    const owner = /^tbuild-secrets-(\d+)-(\d+)-[0-9a-f]+$/.exec(name);
    if (!owner || (await processAlive(Number(owner[1]), owner[2]!))) continue;
    const dir = path.join(SECRETS_PARENT, name);
    const info = await lstat(dir).catch(() => undefined);
    if (info?.isDirectory() && info.uid === uid)
      await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** The names in `dir` that start with `prefix`; none when `dir` does not exist. */
async function namesWithPrefix(dir: string, prefix: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((name) => name.startsWith(prefix));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** The owner a state directory's name holds: `tmp-build-PID-START-RANDOM`. */
const NAMED_OWNER = /^tmp-build-(\d+)-(\d+)-[0-9a-f]+$/;

/**
 * A new state directory for this build, owned by this process. Its owner is in its name, so no
 * moment exists in which a killed build leaves a directory that does not say whose it was (which
 * the next builds had to keep for a minute).
 */
export async function makeBuildStateDir(storeRoot: string): Promise<string> {
  const dir = path.join(storeRoot, `${PREFIX}${process.pid}-${ownStart()}-${randomBytes(6).toString("hex")}`);
  await mkdir(dir, { mode: 0o700 });
  return dir;
}

async function isAbandoned(dir: string): Promise<boolean> {
  const named = NAMED_OWNER.exec(path.basename(dir));
  if (named) return !(await processAlive(Number(named[1]), named[2]!));
  let owner: string;
  try {
    owner = await readFile(path.join(dir, OWNER_FILE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    const made = await lstat(dir).catch(() => undefined);
    return made !== undefined && Date.now() - made.mtimeMs >= UNOWNED_GRACE_MS;
  }
  const [pid, start] = owner.trim().split(" ");
  return !(await processAlive(Number(pid), start ?? ""));
}

/** The state directories in the store whose build is gone; none (one readdir) most of the time. */
async function abandonedBuildStates(storeRoot: string): Promise<string[]> {
  const names = await namesWithPrefix(storeRoot, PREFIX);
  const dirs = names.map((name) => path.join(storeRoot, name));
  const abandoned = await Promise.all(dirs.map((dir) => isAbandoned(dir).catch(() => false)));
  return dirs.filter((_, i) => abandoned[i]);
}

async function removeAbandonedRunsIn(dir: string): Promise<void> {
  const { removeAbandonedRuns } = await import("./sandbox/index.js");
  await removeAbandonedRuns(path.join(dir, SANDBOX_DIR));
}

export interface AbandonedCleanupOptions {
  /** Told once, at most, what could not be cleaned. */
  warn: (message: string) => void;
  /** Called before an abandoned directory is removed (`tbuild prune` counts its size). */
  beforeRemove?: (dir: string) => Promise<void>;
}

/**
 * Removes the state directories of builds that are gone, first deleting every container runc
 * still knows in them. Never fails: what cannot be cleaned stays for a later try, and `warn` says
 * so once. One readdir of the store when there is nothing to clean.
 */
export async function removeAbandonedBuildStates(
  storeRoot: string,
  options: AbandonedCleanupOptions,
): Promise<void> {
  const failures: unknown[] = [];
  await removeAbandonedSecrets();
  try {
    await Promise.all(
      (await abandonedBuildStates(storeRoot)).map(async (dir) => {
        try {
          await removeAbandonedRunsIn(dir);
          await options.beforeRemove?.(dir);
          await rm(dir, { recursive: true, force: true });
        } catch (err) {
          failures.push(err);
        }
      }),
    );
  } catch (err) {
    failures.push(err);
  }
  if (failures.length > 0) {
    const first = failures[0];
    const reason = first instanceof Error ? first.message : String(first);
    const who = failures.length === 1 ? "a killed build" : `${failures.length} killed builds`;
    options.warn(`cannot clean up what ${who} left in ${storeRoot}: ${reason}`);
  }
}

/**
 * Rootless, before the re-exec: deletes the containers of builds that are gone, leaving their
 * directories to removeAbandonedBuildStates inside the new user namespace. A killed build's
 * container still runs in that build's own namespace, where the new namespace's root may signal
 * only processes of its own uid (runc then deletes the state and leaves a step running as another
 * user alive); the user outside owns every such namespace and may signal all of their processes.
 * Silent: what is left is found again, and reported, inside the namespace.
 */
export async function stopAbandonedContainers(storeRoot: string): Promise<void> {
  try {
    await Promise.allSettled(
      (await abandonedBuildStates(storeRoot)).map((dir) => removeAbandonedRunsIn(dir)),
    );
  } catch {
    // reported by removeAbandonedBuildStates
  }
}

/**
 * The owners (`PID-START`) of the state directories in the store whose build still runs: what
 * `tbuild worker ls` and a pool's scheduler count as the store's running builds.
 */
export async function liveBuildOwners(storeRoot: string): Promise<string[]> {
  const names = await namesWithPrefix(storeRoot, PREFIX);
  const owners = await Promise.all(
    names.map(async (name) => {
      const named = NAMED_OWNER.exec(name);
      if (!named) return undefined;
      return (await processAlive(Number(named[1]), named[2]!)) ? `${named[1]}-${named[2]}` : undefined;
    }),
  );
  return owners.filter((owner) => owner !== undefined);
}
