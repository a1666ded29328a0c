/**
 * Base images for tests, made from Debian packages rather than downloaded: a busybox root
 * filesystem from `busybox-static` (`/bin/busybox` and a symlink per applet), imported with
 * `tbuild import`. The root filesystem is built once per busybox binary and kept in the temp
 * directory (its name carries the binary's digest), with fixed mtimes, so every import of it in
 * every test gives the same image digest.
 */

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import {
  chmod,
  copyFile,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { projectRoot, tbuild } from "./cli.js";

const BUSYBOX = "/bin/busybox";
/** 2000-01-01T00:00:00Z: every file's mtime, and the imported image's `created`. */
export const FIXED_EPOCH = 946684800;
/** Bumped when the tree built below changes, so an old cached tree is not reused. */
const LAYOUT_VERSION = 1;

/**
 * Debian's arm64 busybox, unpacked (never installed: busybox-static:arm64 would replace the host's
 * /bin/busybox) by `.ci/install` from `apt-get download busybox-static:arm64`.
 */
export const ARM64_BUSYBOX = path.join(projectRoot, "test/.data/busybox-arm64/bin/busybox");
/** Runs the arm64 busybox on any host (qemu-user-static). */
const QEMU_AARCH64 = "/usr/bin/qemu-aarch64-static";

let cached: Promise<string> | undefined;
let cachedArm64: Promise<string> | undefined;

/** The directory of a busybox root filesystem (shared: never modify it). */
export function busyboxRootfs(): Promise<string> {
  cached ??= buildBusyboxRootfs(BUSYBOX, [BUSYBOX], "install Debian's busybox-static (the CI script does)");
  return cached;
}

/** The same for Debian's arm64 busybox. */
export function arm64BusyboxRootfs(): Promise<string> {
  cachedArm64 ??= buildBusyboxRootfs(
    ARM64_BUSYBOX,
    [QEMU_AARCH64, ARM64_BUSYBOX],
    "run .ci/install, which unpacks Debian's busybox-static:arm64 there and installs qemu-user-static",
  );
  return cachedArm64;
}

/** `busybox`: the binary; `run`: the command that runs it here; `missing`: what to do without it. */
async function buildBusyboxRootfs(busybox: string, run: string[], missing: string): Promise<string> {
  for (const file of new Set([busybox, run[0]!])) {
    if (!existsSync(file)) throw new Error(`${file} is missing: ${missing}`);
  }
  const digest = createHash("sha256").update(readFileSync(busybox)).digest("hex").slice(0, 16);
  const target = path.join(tmpdir(), `tbuild-test-busybox-v${LAYOUT_VERSION}-${digest}`);
  if (existsSync(path.join(target, "bin", "busybox"))) return target;

  const work = await mkdtemp(path.join(tmpdir(), "tbuild-test-busybox-build-"));
  const root = path.join(work, "rootfs");
  for (const dir of ["bin", "etc", "root", "tmp"]) await mkdir(path.join(root, dir), { recursive: true });
  await copyFile(busybox, path.join(root, "bin", "busybox"));
  await chmod(path.join(root, "bin", "busybox"), 0o755);
  const applets = execFileSync(run[0]!, [...run.slice(1), "--list"], { encoding: "utf8" })
    .split("\n")
    .filter(Boolean);
  for (const applet of applets) {
    if (applet !== "busybox") await symlink("busybox", path.join(root, "bin", applet));
  }
  await writeFile(
    path.join(root, "etc", "passwd"),
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  await writeFile(path.join(root, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
  await chmod(path.join(root, "tmp"), 0o1777);
  await chmod(path.join(root, "root"), 0o700);
  await setMtimes(root, FIXED_EPOCH);

  // Another test worker may have finished first: its tree is the same, keep whichever is there.
  await rename(root, target).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
  });
  await rm(work, { recursive: true, force: true });
  return target;
}

async function setMtimes(dir: string, seconds: number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await setMtimes(full, seconds);
    await lutimes(full, seconds, seconds);
  }
  await lutimes(dir, seconds, seconds);
}

/**
 * Imports the busybox root filesystem into the store at `storeRoot` as `name`, with `CMD ["sh"]`
 * and a fixed creation time (so the manifest digest is the same in every store).
 */
export async function importBusybox(storeRoot: string, name: string): Promise<void> {
  const rootfs = await busyboxRootfs();
  const result = tbuild(["import", rootfs, name, "--change", 'CMD ["sh"]'], {
    env: { TBUILD_ROOT: storeRoot, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
  });
  if (result.status !== 0) {
    throw new Error(`tbuild import of busybox failed (${result.status}): ${result.stderr}`);
  }
}

/** The template stores busyboxStore copies, by the temp-dir maker that holds them and by name. */
const templates = new WeakMap<(prefix: string) => string, Map<string, Promise<string>>>();

/**
 * Makes `storeRoot` (missing or empty) the store importBusybox makes, by copying one imported once
 * per test file and name into a directory of `tempDir` (removed with the file's other temp dirs):
 * an import costs about half a CPU-second, a copy a few milliseconds. The copy is that store
 * exactly: a store holds no absolute paths, and no cache writer id before its first cache export.
 */
export async function busyboxStore(
  tempDir: (prefix: string) => string,
  storeRoot: string,
  name: string,
): Promise<void> {
  const byName = templates.get(tempDir) ?? new Map<string, Promise<string>>();
  templates.set(tempDir, byName);
  let template = byName.get(name);
  if (!template) {
    const store = path.join(tempDir("busybox-template"), "store");
    template = importBusybox(store, name).then(() => store);
    byName.set(name, template);
  }
  await mkdir(storeRoot, { recursive: true });
  if (readdirSync(storeRoot).length > 0) throw new Error(`${storeRoot} is not empty: use importBusybox`);
  execFileSync("cp", ["-a", `${await template}/.`, storeRoot]);
}

/**
 * Imports the arm64 busybox root filesystem into the store at `storeRoot` as `name`, an image for
 * linux/arm64 (config `architecture` arm64), with `CMD ["sh"]` and a fixed creation time.
 */
export async function importArm64Busybox(storeRoot: string, name: string): Promise<void> {
  const rootfs = await arm64BusyboxRootfs();
  const result = tbuild(["import", "--platform", "linux/arm64", rootfs, name, "--change", 'CMD ["sh"]'], {
    env: { TBUILD_ROOT: storeRoot, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
  });
  if (result.status !== 0) {
    throw new Error(`tbuild import of the arm64 busybox failed (${result.status}): ${result.stderr}`);
  }
}
