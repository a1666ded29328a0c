/**
 * `tbuild ps`: -q, --filter (status, name, id; one key's values OR-ed), --no-trunc, and the PORTS
 * column of a running container's published ports, as docker shows them. The containers are
 * recorded by hand in each mode's store (ps reads records only), owned by the mode's user.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type ContainerRecord, ContainerStore, processStartTime } from "../../runtime/containers.js";
import { tempDirs } from "../helpers/temp.js";
import { ModeEnv, modes } from "./harness.js";

const tempDir = tempDirs();

const WEB_PORTS = [
  { hostIp: "0.0.0.0", hostPort: 18080, containerPort: 8080, protocol: "tcp" as const },
  { hostIp: "127.0.0.1", hostPort: 5353, containerPort: 53, protocol: "udp" as const },
];

describe.each(modes())("tbuild ps as $name", (mode) => {
  let env: ModeEnv;
  const ids = { web: "a1".repeat(32), dns: "a2".repeat(32), done: "b1".repeat(32), fresh: "c1".repeat(32) };
  beforeAll(async () => {
    env = new ModeEnv(mode, tempDir);
    const containers = new ContainerStore(env.store);
    // "Running" in the process running this test, alive as long as the test is.
    const running = {
      status: "running" as const,
      pid: process.pid,
      pidStartTime: processStartTime(process.pid)!,
      startedAt: new Date().toISOString(),
    };
    const record = (
      id: string,
      state: ContainerRecord["state"],
      args: string[],
    ): Omit<ContainerRecord, "name"> => ({
      id,
      created: new Date().toISOString(),
      image: {
        name: "busybox",
        descriptor: {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: `sha256:${"d".repeat(64)}`,
          size: 1,
        },
      },
      config: {},
      path: "httpd",
      args,
      mounts: [],
      network: "host",
      tty: false,
      interactive: false,
      state,
    });
    const long = ["-f", "-p", "8080", "-h", "/var/www/a-rather-long-document-root"];
    await containers.create(record(ids.web, { ...running, ports: WEB_PORTS }, long), "web");
    // Its tbuild process is gone (pid 1 never started at that time): exited, its ports freed.
    await containers.create(
      record(ids.dns, { status: "running", pid: 1, pidStartTime: "1", ports: [WEB_PORTS[1]!] }, []),
      "web-dns",
    );
    await containers.create(
      record(ids.done, { status: "exited", exitCode: 3, finishedAt: new Date().toISOString() }, []),
      "done",
    );
    await containers.create(record(ids.fresh, { status: "created" }, []), "fresh");
    if (mode.user)
      execFileSync("chown", ["-R", `${mode.user.uid}:${mode.user.gid}`, path.dirname(env.store)]);
  });

  const names = (args: string[]) =>
    env
      .ok(["ps", ...args])
      .split("\n")
      .slice(1)
      .filter(Boolean)
      .map((line) => line.split(/ +/).at(-1));

  it("shows a running container's published ports in the PORTS column, as docker does", () => {
    const lines = env.ok(["ps"]).split("\n");
    expect(lines[0]).toMatch(/^CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +PORTS +NAMES$/);
    expect(lines.slice(1).filter(Boolean)).toHaveLength(1);
    expect(lines[1]).toMatch(/ Up .* {3}0\.0\.0\.0:18080->8080\/tcp, 127\.0\.0\.1:5353->53\/udp {3}web$/);
    // The one whose process is gone has exited: no ports.
    const all = env.ok(["ps", "-a"]);
    expect(all).toMatch(/Exited \(unknown\) +web-dns\n/);
    const json = JSON.parse(env.ok(["ps", "-a", "--format", "json"])) as { name: string; ports: unknown[] }[];
    expect(Object.fromEntries(json.map((c) => [c.name, c.ports]))).toEqual({
      web: WEB_PORTS,
      "web-dns": [],
      done: [],
      fresh: [],
    });
  });

  it("prints IDs only with -q, whole ones and whole commands with --no-trunc", () => {
    expect(env.ok(["ps", "-q"])).toBe(`${ids.web.slice(0, 12)}\n`);
    expect(env.ok(["ps", "-q", "--no-trunc"])).toBe(`${ids.web}\n`);
    expect(env.ok(["ps", "-a", "-q"]).split("\n").filter(Boolean).sort()).toEqual(
      Object.values(ids)
        .map((id) => id.slice(0, 12))
        .sort(),
    );
    expect(env.ok(["ps"])).toContain('"httpd -f -p 8080 -h…"');
    expect(env.ok(["ps", "--no-trunc"])).toContain(
      `${ids.web}   busybox   "httpd -f -p 8080 -h /var/www/a-rather-long-document-root"`,
    );
  });

  it("filters by status (values OR-ed, stopped ones shown without -a), by name and by ID, keys AND-ed", () => {
    expect(names(["--filter", "status=exited"]).sort()).toEqual(["done", "web-dns"]);
    expect(names(["--filter", "status=exited", "--filter", "status=created"]).sort()).toEqual([
      "done",
      "fresh",
      "web-dns",
    ]);
    expect(names(["--filter", "status=running"])).toEqual(["web"]);
    expect(names(["-a", "--filter", "name=web"]).sort()).toEqual(["web", "web-dns"]);
    expect(names(["-a", "--filter", "name=web", "--filter", "status=exited"])).toEqual(["web-dns"]);
    expect(names(["-a", "--filter", `id=${ids.done.slice(0, 5)}`])).toEqual(["done"]);
    expect(env.ok(["ps", "-q", "-f", "status=created"])).toBe(`${ids.fresh.slice(0, 12)}\n`);
  });

  it("refuses a filter it does not know with a usage error naming it", () => {
    const unknownKey = env.run(["ps", "--filter", "label=x"]);
    expect(unknownKey.status).toBe(2);
    expect(unknownKey.stderr).toBe("ERROR: --filter label=x: tbuild ps filters by status, name or id\n");
    const badStatus = env.run(["ps", "--filter", "status=paused"]);
    expect(badStatus.status).toBe(2);
    expect(badStatus.stderr).toBe("ERROR: --filter status=paused: a status is created, running, exited\n");
  });
});
