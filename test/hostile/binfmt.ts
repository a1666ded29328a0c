/**
 * The kernel's binfmt_misc handlers are the machine's, shared by every test file running at once:
 * a test that needs a given state (the aarch64 QEMU handler registered, or none) takes the lock
 * of this file first, and puts back what it found. binfmt_misc is mounted for the time of a
 * registration if it was not, and unmounted again.
 */

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import lockfile from "proper-lockfile";
import type { HostileWorld, TbuildOptions } from "./harness.js";

const BINFMT = "/proc/sys/fs/binfmt_misc";
const AARCH64 = `${BINFMT}/qemu-aarch64`;
/** Debian's qemu-user-static registration of aarch64 (flags OPF: the interpreter opened at once). */
const AARCH64_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf";
/** One lock for every test that needs the binfmt handlers in a known state. */
const LOCK = "/tmp/tbuild-test-binfmt";

/**
 * How old the lock's mtime must be before a waiter takes it as a dead holder's. The holder renews
 * it from its event loop, which a case's synchronous tbuild calls block for as long as the case
 * runs: on a loaded machine longer than a minute, when a 60 s threshold let a waiter take the lock
 * from a live holder (ECOMPROMISED, and the handlers changed under its builds). Longer than any case.
 */
const STALE_MS = 15 * 60_000;

/** Waits for the machine's binfmt handlers to be this caller's; the release function gives them back. */
export async function lockBinfmt(): Promise<() => Promise<void>> {
  return lockfile.lock(LOCK, {
    realpath: false,
    stale: STALE_MS,
    retries: { retries: 1_000, minTimeout: 200, maxTimeout: 2_000 },
  });
}

function mounted(): boolean {
  return existsSync(`${BINFMT}/register`);
}

/** Whether the kernel has an enabled aarch64 QEMU handler (in the namespace tests run in). */
export function aarch64HandlerEnabled(): boolean {
  return mounted() && existsSync(AARCH64) && /^enabled$/m.test(readFileSync(AARCH64, "utf8"));
}

/**
 * Makes sure no aarch64 handler is enabled (one registered is disabled, not removed); the
 * returned function puts the machine back as it was. Call with the lock held.
 */
export function withoutAarch64Handler(): () => void {
  if (!aarch64HandlerEnabled()) return () => {};
  writeFileSync(AARCH64, "0");
  return () => writeFileSync(AARCH64, "1");
}

/**
 * Registers Debian's aarch64 handler (with the F flag) unless one is enabled; the returned
 * function removes what this registered and unmounts what this mounted. Call with the lock held.
 */
export function withAarch64Handler(): () => void {
  if (aarch64HandlerEnabled()) return () => {};
  const mountedHere = !mounted();
  if (mountedHere) execFileSync("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT]);
  const disabled = existsSync(AARCH64);
  if (disabled) writeFileSync(AARCH64, "1");
  else writeFileSync(`${BINFMT}/register`, readFileSync(AARCH64_CONF, "utf8").trim());
  return () => {
    if (disabled) writeFileSync(AARCH64, "0");
    else writeFileSync(AARCH64, "-1");
    if (mountedHere) execFileSync("umount", [BINFMT]);
  };
}

/**
 * Rootless tbuild registers a handler of its own for a foreign platform (userns-binfmt.test.ts);
 * `TBUILD_NO_USERNS_BINFMT=1` makes it mount the emulator into steps and containers instead, as
 * it does where the kernel refuses. `world`, with that set for every tbuild it runs.
 */
export function withMountedEmulator(world: HostileWorld): HostileWorld {
  const env = (options: TbuildOptions = {}) => ({
    ...options,
    env: { TBUILD_NO_USERNS_BINFMT: "1", ...options.env },
  });
  return {
    ...world,
    tbuild: (mode, store, args, options) => world.tbuild(mode, store, args, env(options)),
    spawnTbuild: (mode, store, args, options) => world.spawnTbuild(mode, store, args, env(options)),
  };
}
