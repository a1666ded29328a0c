/**
 * `file`: COPY, ADD, WORKDIR and heredoc files. The actions apply in order to a writable mount of
 * the base filesystem (or an empty one); each copy reads its source input through a read-only
 * view; the mount's changes become one new layer on top of the base's layers.
 */
import { chmod, lchown, lstat, lutimes, mkdir, open, rm } from "node:fs/promises";
import path from "node:path";
import { writeLayer } from "../../oci/layer.js";
import type { FileAction, FileOp } from "../../solver/graph.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";
import { rootPath } from "../root-path.js";
import { chainIds, type WritableMount } from "../snapshot/index.js";
import { inUserNamespace } from "../userns.js";
import type { OpContext } from "./context.js";
import { CopyError, copy } from "./copy.js";
import { CopyReuse, ReuseAbandoned } from "./copy-reuse.js";
import { globInRoot, pathComponents } from "./glob.js";
import { keepUnpacked, prepareLayers } from "./layers.js";
import { parseChmod } from "./mode.js";
import { type Owner, resolveOwner } from "./owner.js";

export async function runFile(op: FileOp, inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const baseLayers = op.base !== undefined ? inputFs(inputs, op.base).layers : [];
  const lowers = await prepareLayers(ctx, baseLayers);
  if (CopyReuse.applies(op.actions)) {
    const key = CopyReuse.key(op.actions[0]!, chainIds(baseLayers.map((l) => l.diffId)).at(-1));
    const { reuse, upper } = await CopyReuse.start(ctx.snapshotter, key, lowers);
    try {
      return await applyOp(op, inputs, ctx, baseLayers, lowers, { reuse, key, upper });
    } catch (err) {
      if (!(err instanceof ReuseAbandoned)) throw err;
      // The previous run's upper directory could not be made a fresh one's: run on a new one.
    }
  }
  return applyOp(op, inputs, ctx, baseLayers, lowers);
}

async function applyOp(
  op: FileOp,
  inputs: FsResult[],
  ctx: OpContext,
  baseLayers: readonly LayerRef[],
  lowers: string[],
  update?: { reuse: CopyReuse; key: string; upper: string | undefined },
): Promise<FsResult> {
  const mount = await ctx.snapshotter.mountWritable(
    lowers,
    update?.upper !== undefined ? { upper: update.upper } : {},
  );
  const reuse = update?.reuse;
  if (reuse) {
    if (mount.mode !== "overlay") reuse.forgetPrevious();
    reuse.root = mount.rootfs;
  }
  const views = new SourceViews(ctx, inputs);
  try {
    for (const action of op.actions) {
      ctx.signal.throwIfAborted();
      // A name is looked up in the root's /etc/passwd, which the previous run may have copied.
      if (
        reuse &&
        "chown" in action &&
        action.chown &&
        (reuse.holds("etc/passwd") || reuse.holds("etc/group"))
      ) {
        throw new ReuseAbandoned("the previous copy wrote /etc/passwd or /etc/group");
      }
      await applyAction(action, mount.rootfs, views, ctx, reuse);
    }
    reuse?.finish();
    const layer = await writeLayer(
      ctx.store.content,
      mount.diff({
        ...(ctx.sourceDateEpoch !== undefined ? { sourceDateEpoch: ctx.sourceDateEpoch } : {}),
        warn: ctx.warn,
      }),
      { compression: ctx.compression, signal: ctx.signal },
    );
    const added: LayerRef = { descriptor: layer.descriptor, diffId: layer.diffId };
    const layers = [...baseLayers, added];
    const kept = await keepUnpacked(mount, layers);
    if (kept !== undefined && update) await update.reuse.record(ctx.snapshotter, update.key, kept);
    return { layers };
  } finally {
    try {
      await views.release();
    } finally {
      await mount.release();
    }
  }
}

function inputFs(inputs: FsResult[], index: number): FsResult {
  const fs = inputs[index];
  if (!fs) throw new Error(`the file op names input ${index}, but it has ${inputs.length} inputs`);
  return fs;
}

/**
 * Read-only views of the source inputs, made on first use. A one-layer filesystem (the context, a
 * heredoc file, a download) is read straight from its unpacked layer directory; a stack of layers
 * through a writable mount that nothing writes to, released when the op ends.
 */
class SourceViews {
  private readonly ctx: OpContext;
  private readonly inputs: FsResult[];
  private readonly views = new Map<number, Promise<string>>();
  private readonly mounts: Promise<WritableMount>[] = [];

  constructor(ctx: OpContext, inputs: FsResult[]) {
    this.ctx = ctx;
    this.inputs = inputs;
  }

  root(index: number): Promise<string> {
    let view = this.views.get(index);
    if (!view) {
      view = this.make(index);
      this.views.set(index, view);
    }
    return view;
  }

  private async make(index: number): Promise<string> {
    const layers = inputFs(this.inputs, index).layers;
    const dirs = await prepareLayers(this.ctx, layers);
    if (dirs.length === 1) return dirs[0]!;
    const mount = this.ctx.snapshotter.mountWritable(dirs);
    this.mounts.push(mount);
    return (await mount).rootfs;
  }

  /** Releases every view's mount, even when one release fails (the first failure is thrown after). */
  async release(): Promise<void> {
    const made = await Promise.allSettled(this.mounts);
    const released = await Promise.allSettled(
      made.map((m) => (m.status === "fulfilled" ? m.value.release() : undefined)),
    );
    const failed = released.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  }
}

async function applyAction(
  action: FileAction,
  root: string,
  views: SourceViews,
  ctx: OpContext,
  reuse: CopyReuse | undefined,
): Promise<void> {
  const owner =
    "chown" in action && action.chown ? await resolveOwner(root, action.chown, ctx.warn) : undefined;
  switch (action.action) {
    case "copy": {
      const srcRoot = await views.root(action.input);
      await copy(action, {
        srcRoot,
        destRoot: root,
        ...(owner ? { owner } : {}),
        ...(action.chmod !== undefined ? { mode: parseChmod(action.chmod) } : {}),
        rootless: inUserNamespace(),
        signal: ctx.signal,
        warn: ctx.warn,
        ...(reuse ? { reuse } : {}),
      });
      return;
    }
    case "mkfile":
      await makeFile(root, action, owner, timestamp(ctx));
      return;
    case "mkdir":
      await makeDirectory(root, action, owner, timestamp(ctx));
      return;
    case "rm":
      await remove(root, action);
      return;
  }
}

/** Files and directories a file op creates get this mtime: now, or SOURCE_DATE_EPOCH. */
function timestamp(ctx: OpContext): Date {
  return ctx.sourceDateEpoch !== undefined ? new Date(ctx.sourceDateEpoch * 1000) : new Date();
}

async function makeFile(
  root: string,
  action: Extract<FileAction, { action: "mkfile" }>,
  owner: Owner | undefined,
  time: Date,
): Promise<void> {
  const target = rootPath(root, action.path);
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isDirectory())
    throw new CopyError(`cannot create the file ${action.path}: it is a directory`);
  if (existing) await rm(target);
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(target, "wx", 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new CopyError(`cannot create the file ${action.path}: its directory does not exist`, err);
    }
    throw err;
  }
  try {
    await handle.writeFile(action.data);
  } finally {
    await handle.close();
  }
  await lchown(target, owner?.uid ?? 0, owner?.gid ?? 0);
  await chmod(target, action.mode & 0o7777);
  await lutimes(target, time, time);
}

async function makeDirectory(
  root: string,
  action: Extract<FileAction, { action: "mkdir" }>,
  owner: Owner | undefined,
  time: Date,
): Promise<void> {
  const target = rootPath(root, action.path);
  const existing = await lstat(target).catch(() => undefined);
  if (existing?.isDirectory()) return;
  if (existing) throw new CopyError(`cannot create the directory ${action.path}: a file is in the way`);
  if (action.makeParents) {
    const created = await mkdir(target, { recursive: true, mode: 0o700 }).catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOTDIR" || err.code === "EEXIST") {
          throw new CopyError(`cannot create the directory ${action.path}: a file is in the way`, err);
        }
        throw err;
      },
    );
    // Every directory made here gets the mode, owner and time, as BuildKit's MkdirAll gives them.
    if (created !== undefined) {
      for (let dir = target; dir.length >= created.length; dir = path.dirname(dir)) {
        await lchown(dir, owner?.uid ?? 0, owner?.gid ?? 0);
        await chmod(dir, action.mode & 0o7777);
        await lutimes(dir, time, time);
      }
    }
    return;
  }
  try {
    await mkdir(target, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new CopyError(`cannot create the directory ${action.path}: its parent does not exist`, err);
    }
    throw err;
  }
  await lchown(target, owner?.uid ?? 0, owner?.gid ?? 0);
  await chmod(target, action.mode & 0o7777);
  await lutimes(target, time, time);
}

async function remove(root: string, action: Extract<FileAction, { action: "rm" }>): Promise<void> {
  const components = pathComponents(action.path);
  if (components.length === 0) throw new CopyError("cannot remove / from a filesystem");
  const matches = action.allowWildcard
    ? await globInRoot(root, action.path, false)
    : [{ path: `/${components.join("/")}` }];
  const targets: string[] = [];
  for (const match of matches) {
    const target = rootPath(root, match.path, { followFinal: false });
    if (await lstat(target).catch(() => undefined)) targets.push(target);
  }
  if (targets.length === 0) {
    if (action.allowNotFound) return;
    throw new CopyError(`cannot remove ${action.path}: it does not exist`);
  }
  for (const target of targets) await rm(target, { recursive: true, force: true });
}
