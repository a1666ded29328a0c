/**
 * A guard for a running container: a small shell process that outlives tbuild when tbuild is
 * killed outright (SIGKILL, the OOM killer), and then does what tbuild would have done: kills the
 * container (runc goes on running it otherwise), unmounts its root filesystem (as real root the
 * mount outlives the process) and removes the container's temporary state.
 *
 * It waits on a pipe from tbuild: tbuild writes `done` once it has cleaned up itself; end of file
 * without it means tbuild is gone. It runs in its own session, so a terminal's Ctrl-C, which
 * tbuild handles, does not end it too.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Socket } from "node:net";

const GUARD_SCRIPT = `
read -r word || true
[ "$word" = done ] && exit 0
runc=$1 runc_root=$2 id=$3 rootfs=$4 rootless=$5
shift 5
global="--root $runc_root"
[ "$rootless" = 1 ] && global="$global --rootless true"
# Kill until runc says there is nothing left to kill; once more a moment later, in case runc was
# still creating the container.
i=0
while "$runc" $global kill "$id" KILL 2>/dev/null && [ $i -lt 50 ]; do
  sleep 0.05
  i=$((i + 1))
done
sleep 0.1
"$runc" $global kill "$id" KILL 2>/dev/null
"$runc" $global delete --force "$id" 2>/dev/null
i=0
while grep -qF " $rootfs " /proc/self/mountinfo && [ $i -lt 20 ]; do
  umount "$rootfs" 2>/dev/null || sleep 0.1
  i=$((i + 1))
done
grep -qF " $rootfs " /proc/self/mountinfo && umount --lazy "$rootfs" 2>/dev/null
[ $# -gt 0 ] && rm -rf -- "$@"
exit 0
`;

export interface GuardOptions {
  runc: string;
  /** runc's `--root` for this container, and the container's runc id. */
  runcRoot: string;
  sandboxId: string;
  rootless: boolean;
  /** The mounted root filesystem. */
  rootfs: string;
  /** Removed after the rest: state nobody needs once the container is gone. */
  remove: string[];
}

export class Guard {
  private readonly child: ChildProcess;

  private constructor(child: ChildProcess) {
    this.child = child;
  }

  static start(options: GuardOptions): Guard {
    const child = spawn(
      "/bin/sh",
      [
        "-c",
        GUARD_SCRIPT,
        "tbuild-guard",
        options.runc,
        options.runcRoot,
        options.sandboxId,
        options.rootfs,
        options.rootless ? "1" : "0",
        ...options.remove,
      ],
      // At / so that it pins no directory the user may want to unmount meanwhile.
      { stdio: ["pipe", "ignore", "ignore"], detached: true, cwd: "/" },
    );
    // Neither the guard nor its pipe may keep tbuild's own event loop alive.
    child.unref();
    (child.stdin as Socket | null)?.unref();
    child.stdin?.on("error", () => {});
    return new Guard(child);
  }

  /** tbuild has cleaned up: the guard exits without doing anything. */
  stop(): void {
    this.child.stdin?.end("done\n");
  }
}
