/**
 * What a process in the sandbox can see and do, with real runc over a busybox image: as real root
 * and rootless (the unprivileged test user in tbuild's user namespace), the same answers.
 */
import { readdirSync, readFileSync } from "node:fs";
import { hostname as hostHostname } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_PATH, parseHardLimits } from "../../../worker/sandbox/index.js";
import { capabilityBits, interfaceNames, MODES, mountsOf, type Outcome, SandboxHarness } from "./harness.js";

/** Docker's default capability set as a bit mask (CapBnd of a `docker run` process): 0xa80425fb. */
const DOCKER_CAPS = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31].reduce(
  (mask, bit) => mask | (1n << BigInt(bit)),
  0n,
);

/** The process's stdout, after checking it ran and exited 0 (the failure message shows why not). */
function succeeded(outcome: Outcome): string {
  expect(outcome.error, `${outcome.stderr}`).toBeUndefined();
  expect(outcome.result, outcome.stderr).toEqual({ exitCode: 0, timedOut: false });
  return outcome.stdout;
}

/** Sections of `sh -c 'echo ==a; ...; echo ==b; ...'` output, by name. */
function sections(stdout: string): Record<string, string> {
  const result: Record<string, string> = {};
  let current = "";
  for (const line of stdout.split("\n")) {
    if (line.startsWith("==")) {
      current = line.slice(2);
      result[current] = "";
    } else if (current) {
      result[current] += `${line}\n`;
    }
  }
  return result;
}

describe.each(MODES)("the sandbox, %s", (mode) => {
  let harness: SandboxHarness;
  beforeAll(async () => {
    harness = await SandboxHarness.create(mode);
  });
  afterAll(async () => {
    await harness?.cleanup();
  });

  it("runs the process as uid 0 and pid 1, and it sees no host process", async () => {
    const out = sections(
      succeeded(
        await harness.run({
          spec: {
            args: [
              "sh",
              "-c",
              "echo ==uid; id -u; echo ==pid; echo $$; echo ==proc; ls /proc; echo ==ps; ps -o pid,args",
            ],
          },
        }),
      ),
    );
    expect(out.uid.trim()).toBe("0");
    expect(out.pid.trim()).toBe("1");
    const pids = out.proc
      .split(/\s+/)
      .filter((e) => /^\d+$/.test(e))
      .map(Number);
    // pid 1 and the few commands of this shell pipeline, nothing of the host's hundreds.
    expect(pids).toContain(1);
    expect(pids.length).toBeLessThan(6);
    expect(pids).not.toContain(process.pid);
    expect(out.ps).not.toMatch(/node|vitest|runc|systemd|init\b/);
  });

  it("gives root Docker's default capabilities and no more; a non-root user none", async () => {
    const status = (user: string) =>
      harness.run({ spec: { args: ["cat", "/proc/self/status"], user } }).then(succeeded);
    const rootStatus = await status("");
    expect(capabilityBits(rootStatus, "CapBnd")).toBe(DOCKER_CAPS);
    expect(capabilityBits(rootStatus, "CapEff")).toBe(DOCKER_CAPS);
    expect(capabilityBits(rootStatus, "CapPrm")).toBe(DOCKER_CAPS);
    expect(capabilityBits(rootStatus, "CapInh")).toBe(0n);
    expect(capabilityBits(rootStatus, "CapAmb")).toBe(0n);
    const appStatus = await status("app");
    expect(capabilityBits(appStatus, "CapBnd")).toBe(DOCKER_CAPS);
    expect(capabilityBits(appStatus, "CapEff")).toBe(0n);
  });

  it("filters syscalls with seccomp: a filter is active and unshare, allowed to any user outside, is refused", async () => {
    const outcome = await harness.run({
      spec: { args: ["sh", "-c", "grep '^Seccomp:' /proc/self/status; unshare -U true && echo unshared"] },
    });
    expect(outcome.stdout).toMatch(/^Seccomp:\s+2$/m);
    expect(outcome.stdout).not.toContain("unshared");
    expect(outcome.stderr).toMatch(/unshare.*(Operation not permitted|permission)/i);
    expect(outcome.result?.exitCode).not.toBe(0);
  });

  it("cannot mount, nor write /proc/sysrq-trigger or /proc/sys; masked /proc files read empty", async () => {
    const outcome = await harness.run({
      spec: {
        args: [
          "sh",
          "-c",
          [
            "mount -t tmpfs x /tmp && echo MOUNTED",
            "echo h > /proc/sysrq-trigger && echo SYSRQ",
            "echo 1 > /proc/sys/vm/drop_caches && echo PROCSYS",
            "echo ==interrupts; cat /proc/interrupts",
            "echo ==mounts; grep ' /proc/sys ' /proc/self/mountinfo",
            "true",
          ].join("; "),
        ],
      },
    });
    const out = sections(succeeded(outcome));
    expect(outcome.stdout).not.toMatch(/MOUNTED|SYSRQ|PROCSYS/);
    expect(outcome.stderr).toMatch(/mount: permission denied/);
    expect(outcome.stderr).toMatch(/sysrq-trigger/);
    expect(outcome.stderr).toMatch(/drop_caches: Read-only file system/);
    // Non-empty on the host, empty inside: /dev/null is bound over it.
    expect(readFileSync("/proc/interrupts", "utf8").length).toBeGreaterThan(0);
    expect(out.interrupts).toBe("");
    expect(out.mounts).toMatch(/ \/proc\/sys ro,/);
  });

  it("has its own hostname, and cannot change the host's", async () => {
    const before = hostHostname();
    const outcome = await harness.run({
      spec: {
        args: ["sh", "-c", "hostname; cat /etc/hostname; hostname foo && echo CHANGED; hostname"],
        hostname: "box",
      },
    });
    expect(succeeded(outcome)).toBe("box\nbox\nbox\n");
    expect(outcome.stderr).toMatch(/sethostname: Operation not permitted/);
    expect(hostHostname()).toBe(before);
  });

  it("with network none sees only loopback, up", async () => {
    const out = sections(
      succeeded(
        await harness.run({
          spec: {
            args: ["sh", "-c", "echo ==dev; cat /proc/net/dev; echo ==lo; ip addr show lo"],
            network: "none",
          },
        }),
      ),
    );
    expect(interfaceNames(out.dev)).toEqual(["lo"]);
    expect(out.lo).toMatch(/UP/);
    expect(out.lo).toContain("127.0.0.1/8");
  });

  it("with the host's network sees the host's interfaces", async () => {
    const out = succeeded(await harness.run({ spec: { args: ["cat", "/proc/net/dev"] } }));
    const host = interfaceNames(readFileSync("/proc/net/dev", "utf8"));
    expect(host.length).toBeGreaterThan(1);
    expect(interfaceNames(out)).toEqual(host);
  });

  it("mounts /sys read-only, a minimal /dev, /dev/shm and /dev/mqueue", async () => {
    const outcome = await harness.run({
      spec: {
        args: [
          "sh",
          "-c",
          "echo ==dev; ls /dev; echo ==mounts; cat /proc/self/mountinfo; touch /sys/x && echo SYSWRITE; touch /dev/shm/x && echo SHM",
        ],
      },
    });
    const out = sections(outcome.stdout);
    expect(out.dev.split("\n").filter(Boolean).sort()).toEqual(
      [
        "fd",
        "full",
        "mqueue",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
      ].sort(),
    );
    expect(out.mounts).toMatch(/ \/sys ro,/);
    expect(out.mounts).toMatch(/ \/dev\/shm rw,nosuid,nodev,noexec/);
    expect(out.mounts).toMatch(/ \/dev\/mqueue .* - mqueue /);
    expect(outcome.stdout).not.toContain("SYSWRITE");
    expect(outcome.stdout).toContain("SHM");
  });

  it("writes /etc/hosts with its hostname and extra hosts, and the host's /etc/resolv.conf", async () => {
    const out = sections(
      succeeded(
        await harness.run({
          spec: {
            args: ["sh", "-c", "echo ==hosts; cat /etc/hosts; echo ==resolv; cat /etc/resolv.conf"],
            hostname: "box",
            extraHosts: { "db.internal": "10.1.2.3" },
          },
        }),
      ),
    );
    expect(out.hosts).toMatch(/^127\.0\.0\.1\s+localhost box$/m);
    expect(out.hosts).toMatch(/^10\.1\.2\.3\s+db\.internal$/m);
    expect(out.resolv).toBe(`${readFileSync("/etc/resolv.conf", "utf8")}\n`);
  });

  it("returns the process's exit code", async () => {
    for (const code of [0, 3, 255]) {
      const outcome = await harness.run({ spec: { args: ["sh", "-c", `exit ${code}`] } });
      expect(outcome.result).toEqual({ exitCode: code, timedOut: false });
    }
  });

  it("reports a process killed by SIGKILL as 128 + 9", async () => {
    const outcome = await harness.run({ spec: { args: ["sleep", "30"] }, killAfterMs: 200 });
    expect(outcome.error).toBeUndefined();
    expect(outcome.result).toEqual({ exitCode: 137, timedOut: false });
    expect(outcome.elapsedMs).toBeLessThan(10_000);
  });

  it("reports a command that cannot start as a SandboxError with runc's words, printed once", async () => {
    const outcome = await harness.run({ spec: { args: ["no-such-command"] } });
    expect(outcome.error).toMatchObject({ name: "SandboxError", code: "E_SANDBOX_RUNC" });
    expect(outcome.error?.message).toMatch(/exec: "no-such-command": executable file not found in \$PATH/);
    expect(outcome.stderr).not.toContain("runc run failed");
  });

  it("sets PATH, HOSTNAME and HOME as Docker does, the image's values winning", async () => {
    const env = (spec: { user?: string; env?: string[] }) =>
      harness
        .run({ spec: { args: ["env"], hostname: "box", ...spec } })
        .then(succeeded)
        .then((text) => text.split("\n").filter(Boolean).sort());
    expect(await env({})).toEqual([`PATH=${DEFAULT_PATH}`, "HOSTNAME=box", "HOME=/root"].sort());
    expect(await env({ user: "app" })).toContain("HOME=/home/app");
    expect(await env({ user: "4321" })).toContain("HOME=/");
    expect(await env({ env: ["PATH=/bin", "GREETING=a b=c"] })).toEqual(
      expect.arrayContaining(["PATH=/bin", "GREETING=a b=c"]),
    );
  });

  it("keeps every rlimit at or under the host's hard limits", async () => {
    const inside = parseHardLimits(
      succeeded(await harness.run({ spec: { args: ["cat", "/proc/self/limits"] } })),
    );
    const host = parseHardLimits(readFileSync("/proc/self/limits", "utf8"));
    expect(Object.keys(inside).length).toBe(16);
    for (const [name, limit] of Object.entries(inside)) {
      expect(limit, name).toBeLessThanOrEqual(host[name as keyof typeof host] ?? 0);
    }
    expect(inside.RLIMIT_NOFILE).toBe(Math.min(1048576, host.RLIMIT_NOFILE ?? 0));
  });

  it("runs as the image's user with its groups from /etc/passwd and /etc/group", async () => {
    const ids = (user: string) =>
      harness.run({ spec: { args: ["sh", "-c", "id -u; id -g; id -G"], user } }).then(succeeded);
    expect(await ids("app")).toBe("1000\n1000\n1000 2000 2001\n");
    expect(await ids("1000")).toBe("1000\n1000\n1000 2000 2001\n");
    expect(await ids("app:unrelated")).toBe("1000\n2002\n2002\n");
    expect(await ids("4321:4321")).toBe("4321\n4321\n4321\n");
    const missing = await harness.run({ spec: { args: ["true"], user: "nosuchuser" } });
    expect(missing.error).toMatchObject({ name: "SandboxError", code: "E_SANDBOX_USER" });
    expect(missing.error?.message).toContain("nosuchuser");
  });

  it("leaves the root filesystem, the state directory and the mounts as they were", async () => {
    const listing = () => readdirSync(harness.rootfs).sort();
    const etc = () => readdirSync(`${harness.rootfs}/etc`).sort();
    const before = { top: listing(), etc: etc() };
    // The busybox image has no /proc, /dev, /sys or /etc/hosts: runc creates them to mount on.
    expect(before.top).not.toContain("proc");
    expect(before.etc).not.toContain("hosts");
    const outcome = await harness.run({
      spec: { args: ["true"], mounts: [{ type: "tmpfs", destination: "/scratch/space" }] },
    });
    succeeded(outcome);
    expect({ top: listing(), etc: etc() }).toEqual(before);
    expect(outcome.stateLeft).toEqual([]);
    expect(mountsOf(harness, outcome)).toEqual([]);
  });
});
