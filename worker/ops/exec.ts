/**
 * RUN: the step's process in the sandbox, on a writable overlay of its root input, with its
 * mounts (other inputs bound in, cache directories that outlive builds, tmpfs, secrets, the ssh
 * agent); what it changed in the root becomes one new layer. A step of a platform the kernel does
 * not run starts through a QEMU emulator (worker/emulation.ts).
 */

import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, cp, mkdir, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { Writable } from "node:stream";
import lockfile from "proper-lockfile";
import { TbuildError } from "../../errors/index.js";
import { FREE_STORE_SPACE } from "../../errors/system.js";
import { writeLayer } from "../../oci/layer.js";
import type { ExecMount, ExecOp } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import { CacheMountStore, cacheMountRecordOf } from "../cache-mounts/store.js";
import { stepEmulator } from "../emulation.js";
import { rootPath } from "../root-path.js";
import { runInSandbox, type SandboxMount } from "../sandbox/index.js";
import type { WritableMount } from "../snapshot/index.js";
import type { OpContext } from "./context.js";
import { keepUnpacked, prepareLayers } from "./layers.js";

/**
 * A RUN whose process exited non-zero: the command, its exit code and its last output lines; and,
 * when the store's disk was full as it failed (its writes go there), that this is why.
 */
export class RunFailedError extends TbuildError {
  override readonly exitCode: number;
  readonly lastOutput: string[];

  constructor(args: string[], exitCode: number, lastOutput: string[], fullStore?: string) {
    super(
      "E_RUN_FAILED",
      `process "${shownCommand(args).join(" ")}" did not complete successfully: exit code: ${exitCode}` +
        (fullStore
          ? `: no space left on device: the store at ${fullStore}, where the step writes, is full: ${FREE_STORE_SPACE}`
          : "") +
        (lastOutput.length > 0 ? `\n${lastOutput.map((l) => `  ${l}`).join("\n")}` : ""),
    );
    this.exitCode = exitCode;
    this.lastOutput = lastOutput;
  }
}

/** A RUN still running when `--step-timeout` ran out: its container was killed. */
export class StepTimeoutError extends TbuildError {
  constructor(args: string[], timeoutMs: number) {
    super(
      "E_STEP_TIMEOUT",
      `process "${shownCommand(args).join(" ")}" did not finish within --step-timeout ${formatDuration(timeoutMs)}: it was killed (give a longer --step-timeout if the step needs more time)`,
    );
  }
}

/** `sh -c` and its script as one word, as BuildKit shows a RUN's process. */
function shownCommand(args: string[]): string[] {
  return args.length >= 3 && args[1] === "-c" ? args.slice(0, 2).concat(args.slice(2).join(" ")) : args;
}

/** `30s`, `5m`, `1500ms`: a duration as a user would have written it. */
function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

export class MissingSecretError extends TbuildError {
  constructor(kind: "secret" | "ssh", id: string) {
    const flag =
      kind === "secret"
        ? `--secret id=${id},src=PATH`
        : `--ssh ${id === "default" ? "default" : `${id}=SOCKET`}`;
    super(
      "E_MISSING_SECRET",
      `RUN --mount=type=${kind} needs ${kind} "${id}", which this build was not given: pass ${flag}`,
    );
  }
}

const OUTPUT_LINES_KEPT = 20;
/**
 * A RUN step's hostname without `BUILDKIT_SANDBOX_HOSTNAME`: BuildKit's (its executor's default),
 * the same in every build, so that a step's output does not depend on its container's id.
 */
const BUILD_HOSTNAME = "buildkitsandbox";

export async function runExec(op: ExecOp, inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  if (op.security === "insecure") {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "RUN --security=insecure is not supported yet: tbuild runs every step sandboxed",
    );
  }
  // Before anything is mounted: a platform this host cannot run fails the step at once.
  const emulator = await stepEmulator(op.platform);
  const rootMount = op.mounts[0]!;
  const rootLayers = rootMount.input !== undefined ? inputs[rootMount.input]!.layers : [];
  const cleanups: (() => Promise<void>)[] = [];
  const env = [...op.env];
  for (const entry of ctx.proxyEnv ?? []) {
    const name = entry.slice(0, entry.indexOf("=") + 1);
    if (!env.some((e) => e.startsWith(name))) env.push(entry);
  }
  const mounts: SandboxMount[] = [];
  const root = await ctx.snapshotter.mountWritable(await prepareLayers(ctx, rootLayers));
  cleanups.push(() => root.release());
  try {
    for (const mount of op.mounts.slice(1)) {
      const added = await prepareMount(mount, inputs, ctx, env, cleanups);
      if (added) mounts.push(added);
    }
    const tail: string[] = [];
    const partial = { 1: "", 2: "" };
    const stream = (fd: 1 | 2) =>
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          ctx.log(fd, chunk);
          const lines = (partial[fd] + chunk.toString("utf8")).split("\n");
          partial[fd] = lines.pop()!;
          tail.push(...lines);
          if (tail.length > OUTPUT_LINES_KEPT) tail.splice(0, tail.length - OUTPUT_LINES_KEPT);
          done();
        },
      });
    const result = await runInSandbox(
      {
        rootfs: root.rootfs,
        args: op.args,
        env,
        cwd: op.cwd,
        user: op.user,
        network: op.network === "none" ? "none" : "host",
        hostname: op.hostname || BUILD_HOSTNAME,
        hostnameInEnv: false,
        mounts,
        ...(emulator !== undefined ? { emulator } : {}),
      },
      {
        stateDir: path.join(ctx.stateDir, "sandbox"),
        stdin: "ignore",
        stdout: stream(1),
        stderr: stream(2),
        signal: ctx.signal,
        ...(ctx.stepTimeoutMs !== undefined ? { timeoutMs: ctx.stepTimeoutMs } : {}),
      },
    );
    if (result.timedOut) throw new StepTimeoutError(op.args, ctx.stepTimeoutMs!);
    if (result.exitCode !== 0) {
      for (const rest of [partial[1], partial[2]]) if (rest) tail.push(rest);
      // Looked at before the step's files are removed: they are what filled it.
      const full = (await storeIsFull(root.rootfs)) ? ctx.store.root : undefined;
      throw new RunFailedError(op.args, result.exitCode, tail.slice(-OUTPUT_LINES_KEPT), full);
    }
    const layers = [...rootLayers, await commitLayer(root, ctx)];
    await keepUnpacked(root, layers);
    return { layers };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  }
}

/** Less than this left for unprivileged writes, the store's disk is full for a step. */
const FULL_BELOW_BYTES = 1024 * 1024;
/** sun_path holds 108 bytes, the last one a NUL. */
const MAX_SOCKET_PATH = 107;

/** Whether the file system of `dir` (in the store) has (next to) no space left. */
async function storeIsFull(dir: string): Promise<boolean> {
  try {
    const stats = await statfs(dir);
    return stats.bavail * stats.bsize < FULL_BELOW_BYTES;
  } catch {
    return false;
  }
}

async function commitLayer(mount: WritableMount, ctx: OpContext) {
  const diff = mount.diff(ctx.sourceDateEpoch !== undefined ? { sourceDateEpoch: ctx.sourceDateEpoch } : {});
  const written = await writeLayer(ctx.store.content, diff, {
    compression: ctx.compression,
    signal: ctx.signal,
  });
  return { descriptor: written.descriptor, diffId: written.diffId };
}

/**
 * Where a mount's `source=` is on the host: resolved inside the filesystem it comes from (a stage,
 * an image, the context), as the container would resolve it, so that a symlink planted there
 * means what it means inside that filesystem and never a host path. runc then gets a path with no
 * symlink left in it. A source that does not exist is an error naming the mount.
 */
function mountSource(rootfs: string, mount: ExecMount): string {
  const selector = mount.selector ?? "/";
  const source = rootPath(rootfs, selector);
  if (!existsSync(source)) {
    throw new TbuildError(
      "E_MOUNT_SOURCE",
      `RUN --mount=type=${mount.type},target=${mount.target}: source ${selector} does not exist in the mounted stage, image or context`,
    );
  }
  return source;
}

async function prepareMount(
  mount: ExecMount,
  inputs: FsResult[],
  ctx: OpContext,
  env: string[],
  cleanups: (() => Promise<void>)[],
): Promise<SandboxMount | undefined> {
  switch (mount.type) {
    case "bind": {
      const layers = mount.input !== undefined ? inputs[mount.input]!.layers : [];
      // Writes to a bind mount are discarded: it is an overlay released after the step.
      const view = await ctx.snapshotter.mountWritable(await prepareLayers(ctx, layers));
      cleanups.push(() => view.release());
      return {
        destination: mount.target,
        source: mountSource(view.rootfs, mount),
        type: "bind",
        readonly: mount.readonly,
      };
    }
    case "tmpfs":
      return {
        destination: mount.target,
        type: "tmpfs",
        options: mount.tmpfs?.size !== undefined ? [`size=${mount.tmpfs.size}`] : [],
      };
    case "cache":
      return cacheMount(mount, inputs, ctx, cleanups);
    case "secret":
      return secretMount(mount, ctx, env, cleanups);
    case "ssh": {
      const socket = ctx.ssh[mount.ssh!.id];
      if (socket === undefined) {
        if (mount.ssh!.required) throw new MissingSecretError("ssh", mount.ssh!.id);
        return undefined;
      }
      env.push(`SSH_AUTH_SOCK=${mount.target}`);
      const ownSocket = mount.mode !== undefined || mount.uid !== undefined || mount.gid !== undefined;
      const source = ownSocket ? await forwardedAgentSocket(socket, mount, ctx, cleanups) : socket;
      return { destination: mount.target, source, type: "bind", readonly: false };
    }
  }
}

/**
 * An ssh mount given a mode, uid or gid (`--mount=type=ssh,mode=0600,uid=100`) gets a socket of
 * its own with that owner and mode (0600 and 0:0 by default), which forwards each connection to
 * the agent, as BuildKit's ssh forwarder does: the agent's own socket keeps its owner and mode.
 */
async function forwardedAgentSocket(
  agent: string,
  mount: ExecMount,
  ctx: OpContext,
  cleanups: (() => Promise<void>)[],
): Promise<string> {
  const file = path.join(ctx.stateDir, `ssh-${randomBytes(4).toString("hex")}.sock`);
  if (Buffer.byteLength(file) > MAX_SOCKET_PATH) {
    throw new TbuildError(
      "E_SSH_SOCKET",
      `cannot make the ssh agent socket for RUN --mount=type=ssh: its path ${file} is longer than a unix socket's ${MAX_SOCKET_PATH} bytes; use a store (TBUILD_ROOT) with a shorter path`,
    );
  }
  const connections = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(agent);
    connections.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      connections.delete(client);
      connections.delete(upstream);
    };
    for (const end of [client, upstream]) end.on("error", drop).on("close", drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(file, () => resolve());
  });
  cleanups.push(async () => {
    for (const connection of connections) connection.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(file, { force: true });
  });
  await chown(file, mount.uid ?? 0, mount.gid ?? 0);
  await chmod(file, mount.mode ?? 0o600);
  return file;
}

/**
 * A cache mount is a directory of the store that outlives builds, named by its id
 * (worker/cache-mounts/store.ts). `locked` waits for other users; `private` uses a throwaway copy
 * when another build holds it.
 *
 * As in BuildKit, a mount with a base (a mode, uid or gid, which BuildKit sets in a layer of its
 * own, or a `from` stage it is seeded with) is named by its id and that base: another mode or a
 * changed stage gives another directory, and a step run under `--no-cache` starts a fresh one,
 * which later builds then use (BuildKit's re-run base). A mount without one outlives `--no-cache`.
 * A mount the build imported (`--cache-from ...,mounts=true`) is seeded before its first use,
 * a fresh generation too.
 */
async function cacheMount(
  mount: ExecMount,
  inputs: FsResult[],
  ctx: OpContext,
  cleanups: (() => Promise<void>)[],
): Promise<SandboxMount> {
  const from = mount.input !== undefined ? inputs[mount.input]! : undefined;
  const record = cacheMountRecordOf(mount, from);
  const { key } = record;
  const based = record.base !== undefined;
  const mounts = new CacheMountStore(ctx.store.root);
  const fresh = based && ctx.ignoringCache === true;
  let data = await mounts.dataDir(key, { based, fresh });
  // After the fresh generation is made, so that it too starts from an imported mount: a build
  // under --no-cache that imports its mounts (CI's) asked for them.
  await ctx.cacheMounts?.seed({ ...record, lastUsed: Date.now() }, mounts);
  if (!(await stat(data).catch(() => undefined))) {
    const building = `${data}.${randomBytes(4).toString("hex")}`;
    await mkdir(building, { recursive: true });
    if (mount.input !== undefined) {
      const seed = await ctx.snapshotter.mountWritable(await prepareLayers(ctx, inputs[mount.input]!.layers));
      try {
        await cp(mountSource(seed.rootfs, mount), building, {
          recursive: true,
          preserveTimestamps: true,
          verbatimSymlinks: true,
        });
      } finally {
        await seed.release();
      }
    }
    await chown(building, mount.uid ?? 0, mount.gid ?? 0);
    await chmod(building, mount.mode ?? 0o755);
    await rename(building, data).catch(async (err: NodeJS.ErrnoException) => {
      // Another build made it first: theirs is as good as ours.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      await rm(building, { recursive: true, force: true });
    });
  }
  await mounts.touch(record);
  ctx.cacheMounts?.used(record);
  if (record.sharing !== "shared") {
    const lock = await lockfile
      .lock(mounts.mountDir(key), {
        realpath: false,
        retries: record.sharing === "locked" ? { retries: 600, minTimeout: 100, maxTimeout: 1000 } : 0,
      })
      .catch(async (err: unknown) => {
        if (record.sharing === "private") return undefined;
        throw err;
      });
    if (lock) {
      cleanups.push(lock);
    } else {
      // Held by another build: this one gets its own copy, thrown away afterwards.
      const copy = path.join(ctx.stateDir, "cache-copies", randomBytes(8).toString("hex"));
      await mkdir(path.dirname(copy), { recursive: true });
      await cp(data, copy, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
      cleanups.push(() => rm(copy, { recursive: true, force: true }));
      data = copy;
    }
  }
  return { destination: mount.target, source: data, type: "bind", readonly: mount.readonly };
}

/** A secret is a file in the step's state directory (never in a layer, the cache or the log), or an env variable. */
async function secretMount(
  mount: ExecMount,
  ctx: OpContext,
  env: string[],
  cleanups: (() => Promise<void>)[],
): Promise<SandboxMount | undefined> {
  const secret = mount.secret!;
  const source = ctx.secrets[secret.id];
  if (source === undefined) {
    if (secret.required) throw new MissingSecretError("secret", secret.id);
    return undefined;
  }
  const value =
    source.fetch !== undefined
      ? Buffer.from(await source.fetch())
      : source.file !== undefined
        ? await readFile(source.file)
        : Buffer.from(process.env[source.env ?? ""] ?? "");
  if (secret.env !== undefined) {
    env.push(`${secret.env}=${value.toString("utf8")}`);
    if (mount.target === "") return undefined;
  }
  const file = path.join(
    ctx.secretsDir ?? path.join(ctx.stateDir, "secrets"),
    randomBytes(12).toString("hex"),
  );
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, value, { mode: mount.mode ?? 0o400 });
  await chown(file, mount.uid ?? 0, mount.gid ?? 0);
  cleanups.push(() => rm(file, { force: true }));
  return { destination: mount.target, source: file, type: "bind", readonly: true };
}
