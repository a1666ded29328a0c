import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuild } from "../helpers/cli.js";
import { busyboxStore, FIXED_EPOCH } from "../helpers/images.js";
import { startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** A store holding the busybox base image, shared by this file's builds (each build names its own image). */
let storeRoot: string;
beforeAll(async () => {
  storeRoot = tempDir("build-store");
  await busyboxStore(tempDir, storeRoot, "busybox");
});

function context(files: Record<string, string>): string {
  const dir = tempDir("build-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function build(args: string[], env: NodeJS.ProcessEnv = {}) {
  return tbuild(["build", "--progress=plain", ...args], { env: { TBUILD_ROOT: storeRoot, ...env } });
}

function runImage(image: string, ...command: string[]) {
  return tbuild(["run", "--rm", image, ...command], { env: { TBUILD_ROOT: storeRoot } });
}

describe("tbuild build", () => {
  it("builds examples/hello into an image that runs", () => {
    const built = build(["-t", "hello:test", path.join(projectRoot, "examples/hello")]);
    expect(built.status, built.stderr).toBe(0);
    const ran = runImage("hello:test");
    expect(ran.stdout).toBe("hello from tbuild\n");
  });

  it("an unchanged rebuild runs nothing and prints one #N CACHED per step", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n" });
    expect(build(["-t", "cached:1", dir]).status).toBe(0);
    const again = build(["-t", "cached:1", dir]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr.match(/^#\d+ CACHED$/gm)).toHaveLength(3);
    expect(again.stderr).toContain("0 step(s) ran");
  });

  it("removing the image keeps the build cache: the rebuild runs nothing", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo kept > /kept\n" });
    expect(build(["-t", "removed:1", dir]).status).toBe(0);
    const rmi = tbuild(["rmi", "removed:1"], { env: { TBUILD_ROOT: storeRoot } });
    expect(rmi.status, rmi.stderr).toBe(0);
    const again = build(["-t", "removed:1", dir]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("0 step(s) ran");
    expect(runImage("removed:1", "cat", "/kept").stdout).toBe("kept\n");
  });

  it("a changed file re-runs only the steps that depend on it; an mtime-only change keeps the cache", () => {
    const dir = context({
      Dockerfile: "FROM busybox\nRUN echo tools > /tools\nCOPY app.txt /app.txt\nRUN cat /app.txt > /copy\n",
      "app.txt": "v1\n",
    });
    expect(build(["-t", "changed:1", dir]).status).toBe(0);
    execFileSync("touch", ["-d", "2001-01-01", path.join(dir, "app.txt")]);
    expect(build(["-t", "changed:1", dir]).stderr).toContain("0 step(s) ran");
    writeFileSync(path.join(dir, "app.txt"), "v2\n");
    const rebuilt = build(["-t", "changed:1", dir]);
    expect(rebuilt.stderr).toContain("2 step(s) ran");
    expect(rebuilt.stderr).toMatch(/\[2\/4\] RUN echo tools > \/tools\n#\d+ CACHED/);
    expect(runImage("changed:1", "cat", "/copy").stdout).toBe("v2\n");
  });

  it("a fresh copy of the same sources hits the cache", () => {
    const dir = context({
      Dockerfile: "FROM busybox\nCOPY . /src\nRUN ls /src > /listing\n",
      "a.txt": "a\n",
    });
    expect(build(["-t", "fresh:1", dir]).status).toBe(0);
    const copy = tempDir("build-clone");
    cpSync(dir, copy, { recursive: true, preserveTimestamps: false });
    expect(build(["-t", "fresh:1", copy]).stderr).toContain("0 step(s) ran");
  });

  it("a failing RUN exits 1 naming the step, its line, the exit code and its last output", () => {
    const dir = context({ Dockerfile: "FROM busybox\n\nRUN echo about to fail && exit 3\n" });
    const failed = build(["-t", "fails:1", dir]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toContain("Dockerfile:3");
    expect(failed.stderr).toContain("exit code: 3");
    expect(failed.stderr).toContain("about to fail");
    expect(failed.stderr).not.toMatch(/\n\s+at /);
  });

  it("a COPY source that does not exist names the path and the line", () => {
    const dir = context({ Dockerfile: "FROM busybox\nCOPY missing.txt /x\n" });
    const failed = build(["-t", "missing:1", dir]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toContain("missing.txt");
    expect(failed.stderr).toContain("Dockerfile:2");
  });

  it("a required secret that was not given is an error before anything runs", () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN touch /ran\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token\n",
    });
    const failed = build(["-t", "nosecret:1", dir]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).toContain('secret "token"');
    expect(failed.stderr).toContain("--secret id=token");
    expect(failed.stderr).not.toContain("RUN touch /ran\n#");
  });

  it("a secret reaches RUN but never a layer", () => {
    const secret = path.join(tempDir("secret"), "token");
    writeFileSync(secret, "s3cr3t-value");
    const dir = context({
      Dockerfile: "FROM busybox\nRUN --mount=type=secret,id=token wc -c < /run/secrets/token > /length\n",
    });
    const built = build([
      "-t",
      "secret:1",
      "--secret",
      `id=token,src=${secret}`,
      "-o",
      `type=tar,dest=${path.join(dir, "fs.tar")}`,
      dir,
    ]);
    expect(built.status, built.stderr).toBe(0);
    expect(runImage("secret:1", "cat", "/length").stdout.trim()).toBe("12");
    const layers = execFileSync(
      "sh",
      ["-c", `cat ${storeRoot}/blobs/sha256/* | gzip -dcf 2>/dev/null | strings`],
      {
        encoding: "utf8",
        maxBuffer: 256 * 1024 * 1024,
      },
    );
    expect(layers).not.toContain("s3cr3t-value");
    expect(readFileSync(path.join(dir, "fs.tar")).includes("s3cr3t-value")).toBe(false);
  });

  it("a proxy build arg reaches RUN in both cases, and changing it alone re-runs nothing", () => {
    const dir = context({ Dockerfile: 'FROM busybox\nRUN echo "$HTTP_PROXY $http_proxy" > /proxy\n' });
    const first = build(["-t", "proxy:1", "--build-arg", "http_proxy=http://one:3128", dir]);
    expect(first.status, first.stderr).toBe(0);
    expect(runImage("proxy:1", "cat", "/proxy").stdout).toBe("http://one:3128 http://one:3128\n");
    const changed = build(["-t", "proxy:1", "--build-arg", "http_proxy=http://two:3128", dir]);
    expect(changed.status, changed.stderr).toBe(0);
    expect(changed.stderr).toContain("0 step(s) ran");
    expect(runImage("proxy:1", "cat", "/proxy").stdout).toBe("http://one:3128 http://one:3128\n");
  });

  it("proxy build args of each name, in either case, reach RUN but not the cache key, the history or the config", () => {
    const names = ["HTTP_PROXY", "https_proxy", "NO_PROXY", "ftp_proxy", "ALL_PROXY"];
    const dir = context({
      Dockerfile:
        'FROM busybox\nRUN echo "seen: $http_proxy $HTTPS_PROXY $no_proxy $FTP_PROXY $all_proxy"\nRUN echo done > /done\n',
    });
    const proxies = (value: string) =>
      names.flatMap((name) => ["--build-arg", `${name}=${value}-${name.toLowerCase()}`]);
    const first = build(["-t", "proxies:1", ...proxies("first"), dir]);
    expect(first.status, first.stderr).toBe(0);
    // Each is set in both cases, whichever case it was given in (BuildKit's ProxyEnv).
    expect(first.stderr).toContain(
      "seen: first-http_proxy first-https_proxy first-no_proxy first-ftp_proxy first-all_proxy",
    );
    const second = build(["-t", "proxies:1", ...proxies("second"), dir]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr.match(/^#\d+ CACHED$/gm)).toHaveLength(3);
    expect(second.stderr).toContain("0 step(s) ran");
    const inspected = tbuild(["inspect", "proxies:1"], { env: { TBUILD_ROOT: storeRoot } });
    expect(inspected.status, inspected.stderr).toBe(0);
    const { config } = JSON.parse(inspected.stdout) as { config: { history: unknown[]; config: unknown } };
    expect(config.history.length).toBeGreaterThan(0);
    expect(JSON.stringify(config)).not.toMatch(/first-|second-|_proxy=/i);
  });

  it("a cache mount keeps its contents across builds, even with --no-cache", () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > /count\n",
    });
    expect(build(["-t", "cachemount:1", dir]).status).toBe(0);
    const again = build(["-t", "cachemount:1", "--no-cache", dir]);
    expect(again.status, again.stderr).toBe(0);
    expect(runImage("cachemount:1", "cat", "/count").stdout.trim()).toBe("2");
  });

  it("a cache mount with a mode starts fresh under --no-cache, and later builds keep that one, as BuildKit's", () => {
    const dockerfile = (word: string) =>
      `FROM busybox\nRUN --mount=type=cache,id=based,target=/cache,mode=0773 touch /cache/${word} && ls /cache > /list\n`;
    const dir = context({ Dockerfile: dockerfile("abc") });
    const list = () => runImage("basedcache:1", "cat", "/list").stdout.split("\n").filter(Boolean);
    expect(build(["-t", "basedcache:1", dir]).status).toBe(0);
    writeFileSync(path.join(dir, "Dockerfile"), dockerfile("def"));
    const fresh = build(["-t", "basedcache:1", "--no-cache", dir]);
    expect(fresh.status, fresh.stderr).toBe(0);
    expect(list()).toEqual(["def"]);
    writeFileSync(path.join(dir, "Dockerfile"), dockerfile("ghi"));
    expect(build(["-t", "basedcache:1", dir]).status).toBe(0);
    expect(list()).toEqual(["def", "ghi"]);
  });

  it("SOURCE_DATE_EPOCH makes the same inputs give the same manifest digest in two empty stores", async () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo same > /same\nCOPY f /f\n", f: "content\n" });
    const digests: string[] = [];
    for (const store of [tempDir("repro-a"), tempDir("repro-b")]) {
      await busyboxStore(tempDir, store, "busybox");
      const iid = path.join(store, "iid");
      const built = tbuild(["build", "-t", "repro:1", "--iidfile", iid, dir], {
        env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
      });
      expect(built.status, built.stderr).toBe(0);
      digests.push(readFileSync(iid, "utf8").trim());
    }
    expect(digests[0]).toMatch(/^sha256:/);
    expect(digests[1]).toBe(digests[0]);
  });

  it("builds the same image as an unprivileged user, rootless", async () => {
    const dir = context({
      Dockerfile: "FROM busybox\nRUN echo rootless > /r && chown 1234:1234 /r\nCOPY f /f\n",
      f: "x\n",
    });
    chmodSync(dir, 0o755);
    const rootStore = tempDir("rootless-a");
    const userStore = tempDir("rootless-b");
    // The same base image in both stores (made by root: a fixed epoch gives the same digest).
    await busyboxStore(tempDir, rootStore, "busybox");
    await busyboxStore(tempDir, userStore, "busybox");
    execFileSync("chown", ["-R", "tbuild-test", userStore]);
    const digests: string[] = [];
    for (const [store, asUser] of [
      [rootStore, false],
      [userStore, true],
    ] as const) {
      const command = [
        "env",
        `TBUILD_ROOT=${store}`,
        `SOURCE_DATE_EPOCH=${FIXED_EPOCH}`,
        path.join(projectRoot, "bin/tbuild"),
        "build",
        "-q",
        "-t",
        "same:1",
        dir,
      ];
      const result = asUser
        ? spawnSync("runuser", ["-u", "tbuild-test", "--", ...command], { encoding: "utf8" })
        : spawnSync(command[0]!, command.slice(1), { encoding: "utf8" });
      expect(result.status, result.stderr).toBe(0);
      digests.push(result.stdout.trim());
    }
    expect(digests[1]).toBe(digests[0]);
  });

  it("--push sends the image to its registry, and -o type=oci writes an archive skopeo reads", async () => {
    const registry = await startRegistry();
    try {
      const dir = context({ Dockerfile: "FROM busybox\nRUN echo pushed > /p\n" });
      const archive = path.join(dir, "out.tar");
      const ref = `${registry.host}/app/pushed:1`;
      const built = build(["-t", ref, "--push", "-o", `type=oci,dest=${archive}`, dir]);
      expect(built.status, built.stderr).toBe(0);
      const remote = JSON.parse(
        execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${ref}`], { encoding: "utf8" }),
      );
      expect(remote.Layers).toHaveLength(2);
      const local = JSON.parse(
        execFileSync("skopeo", ["inspect", `oci-archive:${archive}`], { encoding: "utf8" }),
      );
      expect(local.Layers).toEqual(remote.Layers);
    } finally {
      await registry.stop();
    }
  });

  it("RUN bind mounts read stages and the context, and their writes are discarded", () => {
    const dir = context({
      Dockerfile: [
        "FROM busybox AS deps",
        "RUN mkdir /data && echo from-stage > /data/x",
        "FROM busybox",
        "RUN --mount=type=bind,from=deps,source=/data,target=/mnt cat /mnt/x > /from-stage",
        "RUN --mount=type=bind,target=/ctx,rw cat /ctx/input.txt > /from-context && touch /ctx/written",
        "",
      ].join("\n"),
      "input.txt": "from-context\n",
    });
    const out = path.join(tempDir("bind-out"), "fs");
    const built = build(["-o", `type=local,dest=${out}`, dir]);
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(path.join(out, "from-stage"), "utf8")).toBe("from-stage\n");
    expect(readFileSync(path.join(out, "from-context"), "utf8")).toBe("from-context\n");
    expect(existsSync(path.join(dir, "written"))).toBe(false);
    expect(existsSync(path.join(out, "ctx"))).toBe(false);
  });

  it("a RUN tmpfs mount is a tmpfs that leaves nothing in the layer", () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN --mount=type=tmpfs,target=/scratch grep ' /scratch tmpfs ' /proc/mounts > /seen && echo x > /scratch/f\n",
    });
    const out = path.join(tempDir("tmpfs-out"), "fs");
    const built = build(["-o", `type=local,dest=${out}`, dir]);
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(path.join(out, "seen"), "utf8")).toContain("tmpfs");
    expect(existsSync(path.join(out, "scratch", "f"))).toBe(false);
  });

  it("a RUN ssh mount forwards the agent given with --ssh", () => {
    const agentDir = tempDir("ssh-agent");
    const socket = path.join(agentDir, "agent.sock");
    const agent = spawnSync("ssh-agent", ["-a", socket], { encoding: "utf8" });
    expect(agent.status, agent.stderr).toBe(0);
    const pid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
    try {
      const dir = context({
        Dockerfile:
          'FROM busybox\nRUN --mount=type=ssh,required=true test -S "$SSH_AUTH_SOCK" && echo agent-seen > /ssh\n',
      });
      const out = path.join(tempDir("ssh-out"), "fs");
      const built = build(["--ssh", `default=${socket}`, "-o", `type=local,dest=${out}`, dir]);
      expect(built.status, built.stderr).toBe(0);
      expect(readFileSync(path.join(out, "ssh"), "utf8")).toBe("agent-seen\n");
      const without = build(["-o", `type=local,dest=${out}-2`, dir]);
      expect(without.status).toBe(1);
      expect(without.stderr).toContain("--ssh");
    } finally {
      if (pid) process.kill(Number(pid));
    }
  });

  it("a RUN ssh mount with mode, uid and gid gets an agent socket of that owner and mode", () => {
    const agentDir = tempDir("ssh-agent");
    const socket = path.join(agentDir, "agent.sock");
    const agent = spawnSync("ssh-agent", ["-a", socket], { encoding: "utf8" });
    expect(agent.status, agent.stderr).toBe(0);
    const pid = /SSH_AGENT_PID=(\d+)/.exec(agent.stdout)?.[1];
    try {
      const dir = context({
        Dockerfile:
          'FROM busybox\nRUN --mount=type=ssh,mode=741,uid=100,gid=102 stat -c "%u %g %a %F" "$SSH_AUTH_SOCK" > /ssh\n',
      });
      const out = path.join(tempDir("ssh-out"), "fs");
      const built = build(["--ssh", `default=${socket}`, "-o", `type=local,dest=${out}`, dir]);
      expect(built.status, built.stderr).toBe(0);
      expect(readFileSync(path.join(out, "ssh"), "utf8")).toBe("100 102 741 socket\n");
    } finally {
      if (pid) process.kill(Number(pid));
    }
  });

  it("[build] jobs in config.toml limits the steps run at once, and --jobs overrides it", () => {
    const dir = context({
      Dockerfile: [
        "FROM busybox AS left",
        "RUN sleep 1 && echo left > /left",
        "FROM busybox AS right",
        "RUN sleep 1 && echo right > /right",
        "FROM busybox",
        "COPY --from=left /left /left",
        "COPY --from=right /right /right",
        "",
      ].join("\n"),
    });
    const configDir = tempDir("jobs-config");
    const config = (jobs: number) => {
      const file = path.join(configDir, `jobs-${jobs}.toml`);
      writeFileSync(file, `[build]\njobs = ${jobs}\n`);
      return file;
    };
    /** Whether the two RUNs ran at the same time: one started before the other completed. */
    const overlapped = (args: string[], configFile: string) => {
      const built = tbuild(["build", "--no-cache", "--progress=rawjson", ...args, dir], {
        env: { TBUILD_ROOT: storeRoot, TBUILD_CONFIG: configFile },
      });
      expect(built.status, built.stderr).toBe(0);
      const events = built.stderr
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as { type: string; name?: string });
      const at = (type: string, name: string) =>
        events.findIndex((e) => e.type === type && e.name?.includes(`RUN sleep 1 && echo ${name}`));
      const runs = ["left", "right"].map((name) => ({
        started: at("vertex.started", name),
        completed: at("vertex.completed", name),
      }));
      for (const run of runs) expect(run.started).toBeGreaterThanOrEqual(0);
      const [first, second] = runs.sort((a, b) => a.started - b.started);
      return second!.started < first!.completed;
    };
    expect(overlapped([], config(1))).toBe(false);
    expect(overlapped([], config(2))).toBe(true);
    expect(overlapped(["--jobs", "2"], config(1))).toBe(true);
  });

  it("--network=none leaves RUN steps only loopback; a RUN --network=host still has the host's", () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN ls /sys/class/net > /build-default\nRUN --network=host ls /sys/class/net > /run-host\n",
    });
    const hostInterfaces = readdirSync("/sys/class/net").sort();
    expect(hostInterfaces.length).toBeGreaterThan(1);
    const interfaces = (out: string, file: string) =>
      readFileSync(path.join(out, file), "utf8").trim().split("\n").sort();

    const none = path.join(tempDir("network-none"), "fs");
    const isolated = build(["--network=none", "-o", `type=local,dest=${none}`, dir]);
    expect(isolated.status, isolated.stderr).toBe(0);
    expect(interfaces(none, "build-default")).toEqual(["lo"]);
    expect(interfaces(none, "run-host")).toEqual(hostInterfaces);

    const shared = path.join(tempDir("network-default"), "fs");
    const byDefault = build(["-o", `type=local,dest=${shared}`, dir]);
    expect(byDefault.status, byDefault.stderr).toBe(0);
    expect(interfaces(shared, "build-default")).toEqual(hostInterfaces);
  });

  it("a RUN step's host name is BuildKit's buildkitsandbox and its environment has no HOSTNAME, in every build", () => {
    const dir = context({
      Dockerfile: "FROM busybox\nRUN hostname > /name; env | sort > /env; cat /etc/hosts > /hosts\n",
    });
    const outputs = ["first", "second"].map((name) => {
      const out = path.join(tempDir(`hostname-${name}`), "fs");
      const built = build(["--no-cache", "-o", `type=local,dest=${out}`, dir]);
      expect(built.status, built.stderr).toBe(0);
      return out;
    });
    for (const out of outputs) {
      expect(readFileSync(path.join(out, "name"), "utf8")).toBe("buildkitsandbox\n");
      expect(readFileSync(path.join(out, "env"), "utf8")).not.toMatch(/^HOSTNAME=/m);
      expect(readFileSync(path.join(out, "hosts"), "utf8")).toMatch(
        /^127\.0\.0\.1\s+localhost buildkitsandbox$/m,
      );
    }
    expect(readFileSync(path.join(outputs[1]!, "env"), "utf8")).toBe(
      readFileSync(path.join(outputs[0]!, "env"), "utf8"),
    );
    // `tbuild run` is Docker's container: HOSTNAME is set, to the container's own name.
    const ran = runImage("busybox", "sh", "-c", 'echo "$HOSTNAME $(hostname)"');
    expect(ran.status, ran.stderr).toBe(0);
    const [variable, name] = ran.stdout.trim().split(" ");
    expect(variable).toMatch(/^[0-9a-f]{12}$/);
    expect(name).toBe(variable);
  });

  it("with --push and an archive output, --iidfile, --metadata-file and the summary give the pushed digest", async () => {
    const registry = await startRegistry();
    try {
      const dir = context({ Dockerfile: "FROM busybox\nRUN echo several > /s\n" });
      const out = tempDir("several-out");
      const ref = `${registry.host}/app/several:1`;
      const files = { iid: path.join(out, "iid"), metadata: path.join(out, "metadata.json") };
      const built = build([
        "-t",
        ref,
        "--push",
        "-o",
        `type=docker,dest=${path.join(out, "image.tar")}`,
        "--iidfile",
        files.iid,
        "--metadata-file",
        files.metadata,
        dir,
      ]);
      expect(built.status, built.stderr).toBe(0);
      const raw = execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`]);
      const pushed = `sha256:${createHash("sha256").update(raw).digest("hex")}`;
      expect(JSON.parse(readFileSync(files.metadata, "utf8"))["containerimage.digest"]).toBe(pushed);
      expect(readFileSync(files.iid, "utf8")).toBe(pushed);
      expect(/image (sha256:[0-9a-f]{64})/.exec(built.stderr)?.[1]).toBe(pushed);
      // The docker archive was written too, with its own manifest (Docker media types).
      expect(execFileSync("tar", ["tf", path.join(out, "image.tar")], { encoding: "utf8" })).toContain(
        "manifest.json",
      );

      // With archives alone, the archive's manifest is the one reported.
      const archive = path.join(out, "zstd.tar");
      const archived = build([
        "-o",
        `type=oci,dest=${archive},compression=zstd,force-compression=true`,
        "--iidfile",
        files.iid,
        dir,
      ]);
      expect(archived.status, archived.stderr).toBe(0);
      const inArchive = execFileSync("skopeo", ["inspect", "--raw", `oci-archive:${archive}`]);
      const archivedDigest = `sha256:${createHash("sha256").update(inArchive).digest("hex")}`;
      expect(archivedDigest).not.toBe(pushed);
      expect(readFileSync(files.iid, "utf8")).toBe(archivedDigest);
    } finally {
      await registry.stop();
    }
  });
});
