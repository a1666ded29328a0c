/**
 * What the benchmarks that run containers share: a busybox root filesystem made from Debian's
 * busybox-static (for `tbuild import`), and a check that a spawned tool succeeded.
 */
import { execFileSync, type spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * A busybox root filesystem in `dir`: the binary, a symlink per applet, root in passwd and group.
 * `busybox` is this host's by default; a foreign one is asked for its applets through `runner`
 * (its emulator, e.g. `["qemu-aarch64-static"]`).
 */
export function makeBusyboxRootfs(dir: string, busybox = "/bin/busybox", runner: string[] = []): void {
  for (const sub of ["bin", "etc", "root", "tmp"]) mkdirSync(join(dir, sub), { recursive: true });
  copyFileSync(busybox, join(dir, "bin", "busybox"));
  chmodSync(join(dir, "bin", "busybox"), 0o755);
  const [program, ...args] = [...runner, busybox, "--list"];
  const applets = execFileSync(program!, args, { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const applet of applets) if (applet !== "busybox") symlinkSync("busybox", join(dir, "bin", applet));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\n");
}

/** Throws with the tool's last stderr unless it exited 0. */
export function check(result: ReturnType<typeof spawnSync>, what: string): void {
  if (result.status !== 0) {
    throw new Error(
      `${what} failed (${result.status ?? result.signal}): ${String(result.stderr).slice(-2000)}`,
    );
  }
}
