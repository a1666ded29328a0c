/**
 * Build secrets as an attacker (or a careless exporter) could leak them: `RUN --mount=type=secret`
 * in its file and env= forms, a secret source that is a symlink, and an ssh agent with a key, used
 * by real RUN steps, and then searched for, as raw bytes, hex and base64, in everything the builds
 * left: every file of the store (layer blobs decompressed), the cache index, the progress logs
 * (plain, rawjson with its output decoded, tty), --metadata-file, `tbuild inspect`, the cache
 * exported locally and to a registry (mode=max), and the oci, docker, tar and local outputs.
 *
 * And the Dockerfile chooses where a secret is mounted, never what is mounted: mount targets that
 * go through links in the image (/run → /, /run/secrets → a host path, a relative link climbing
 * out) resolve inside the container's root, leave the host untouched, and leave no mount stub in
 * the step's layer.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chownSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busyboxRootfs } from "../helpers/images.js";
import { userIds } from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { runOnTerminal } from "../helpers/terminal.js";
import { type Canary, hostileWorld, MODES, type Mode, ROOTLESS_USER, tbuildCommandLine } from "./harness.js";
import { addProbeKit, placesHolding, secretForms } from "./probes.js";

const sha256 = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

/** `command` as the user tbuild runs as in `mode` (setpriv execs it: its pid is the command's). */
function asModeUser(mode: Mode, command: string[]): string[] {
  if (mode === "root") return command;
  const { uid, gid } = userIds(ROOTLESS_USER);
  return ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", ...command];
}

function chownToMode(mode: Mode, file: string): void {
  if (mode === "rootless") {
    const { uid, gid } = userIds(ROOTLESS_USER);
    chownSync(file, uid, gid);
  }
}

/** A real ssh-agent, as the mode's user, holding a new ed25519 key; ready when this resolves. */
async function startAgent(
  mode: Mode,
  dir: string,
): Promise<{ socket: string; agent: ChildProcess; publicBlob: string; privateSeed: Buffer }> {
  const key = path.join(dir, "key");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "hostile-key", "-f", key]);
  for (const file of [key, `${key}.pub`]) chownToMode(mode, file);
  const socket = path.join(dir, "agent.sock");
  const [file, ...args] = asModeUser(mode, ["ssh-agent", "-D", "-a", socket]);
  const agent = spawn(file!, args, { stdio: ["ignore", "pipe", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    let said = "";
    agent.stdout!.on("data", (chunk: Buffer) => {
      said += chunk.toString();
      if (said.includes("SSH_AUTH_SOCK=")) resolve();
    });
    agent.once("exit", (code) => reject(new Error(`ssh-agent exited (${code}) before it was ready`)));
  });
  const [addFile, ...addArgs] = asModeUser(mode, ["env", `SSH_AUTH_SOCK=${socket}`, "ssh-add", "-q", key]);
  execFileSync(addFile!, addArgs, { stdio: "ignore" });
  return { socket, agent, publicBlob: publicKeyBlob(`${key}.pub`), privateSeed: ed25519Seed(key) };
}

function publicKeyBlob(publicKeyFile: string): string {
  return Buffer.from(readFileSync(publicKeyFile, "utf8").split(" ")[1]!, "base64").toString("hex");
}

/** The 32 secret bytes of an unencrypted OpenSSH ed25519 private key file (PROTOCOL.key). */
function ed25519Seed(privateKeyFile: string): Buffer {
  const body = readFileSync(privateKeyFile, "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("-----"))
    .join("");
  const fields = (data: Buffer, start: number) => {
    let at = start;
    return {
      skip: (bytes: number) => {
        at += bytes;
      },
      string: () => {
        const length = data.readUInt32BE(at);
        at += 4 + length;
        return data.subarray(at - length, at);
      },
    };
  };
  const file = fields(Buffer.from(body, "base64"), "openssh-key-v1\0".length);
  // The cipher, the KDF and its options, the number of keys, the public key, then the private part.
  file.string();
  file.string();
  file.string();
  file.skip(4);
  file.string();
  const secret = fields(file.string(), 0);
  // Two check numbers, the key type, the public key, then the private key: its seed, then the public key.
  secret.skip(8);
  secret.string();
  secret.string();
  return Buffer.from(secret.string().subarray(0, 32));
}

const DOCKERFILE = `FROM busybox AS kit
COPY kit/ /

FROM kit AS secrets
RUN --mount=type=secret,id=s sha256sum /run/secrets/s | cut -d" " -f1 > /from-file && echo the secret file was there
RUN --mount=type=secret,id=e,env=SECRET_ENV sh -c 'printf %s "$SECRET_ENV" | sha256sum | cut -d" " -f1 > /from-env'
RUN --mount=type=secret,id=l sha256sum /run/secrets/l | cut -d" " -f1 > /from-link
RUN --mount=type=secret,id=s,target=/etc/passwd sha256sum /etc/passwd | cut -d" " -f1 > /over-passwd
RUN --mount=type=ssh perl /probe/agent.pl > /agent-keys

FROM busybox AS run-is-root
RUN rm -rf /run && ln -s / /run
RUN --mount=type=secret,id=s sha256sum /run/secrets/s | cut -d" " -f1 > /seen

FROM busybox AS run-secrets-is-the-canary
ARG CANARY
RUN mkdir -p /run && ln -s "$CANARY" /run/secrets
RUN --mount=type=secret,id=s sha256sum /run/secrets/s | cut -d" " -f1 > /seen

FROM busybox AS target-through-a-link
ARG CANARY
RUN ln -s "$CANARY" /hostdir
RUN --mount=type=secret,id=s,target=/hostdir/planted sha256sum /hostdir/planted | cut -d" " -f1 > /seen

FROM kit AS ssh-through-a-relative-link
ARG CANARY
RUN mkdir -p /run && ln -s "../../../../../../../..$CANARY" /run/buildkit
RUN --mount=type=ssh perl /probe/agent.pl > /seen
`;

const BUSYBOX_TOP = ["bin", "etc", "root", "tmp"];
const KIT_TOP = [...BUSYBOX_TOP, "lib", "lib64", "probe", "usr"];

/**
 * The stages whose secret or ssh mount target goes through a link, where the link points, and
 * what the root of their result holds (the stage's own files, no mount stub).
 */
const LINKED_TARGETS = [
  { stage: "run-is-root", how: "/run is a link to /", kind: "secret", top: [...BUSYBOX_TOP, "run", "seen"] },
  {
    stage: "run-secrets-is-the-canary",
    how: "/run/secrets is a link to the canary's host path",
    kind: "secret",
    top: [...BUSYBOX_TOP, "run", "seen"],
  },
  {
    stage: "target-through-a-link",
    how: "target=/hostdir/planted, /hostdir a link to the canary's host path",
    kind: "secret",
    top: [...BUSYBOX_TOP, "hostdir", "seen"],
  },
  {
    stage: "ssh-through-a-relative-link",
    how: "/run/buildkit is a relative link climbing to the canary's host path",
    kind: "ssh",
    top: [...KIT_TOP, "run", "seen"],
  },
] as const;

/** The killed build's step sleeps this long: its processes are found by it. */
const NAP = "86423";

/** Pids of processes whose command line contains `text`. */
function processesWith(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ").includes(text))
        pids.push(Number(entry));
    } catch {
      // ended meanwhile
    }
  }
  return pids;
}

const world = hostileWorld();
let registry: RunningRegistry;
beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
  // A failed kill case leaves no sleeping step behind.
  for (const pid of processesWith(`sleep ${NAP}`)) process.kill(pid, "SIGKILL");
});

describe.each(MODES)("secrets never land anywhere persistent, %s", (mode: Mode) => {
  const values = {
    file: `secret-file-${randomBytes(16).toString("hex")}`,
    env: `secret-env-${randomBytes(16).toString("hex")}`,
    linked: `secret-linked-${randomBytes(16).toString("hex")}`,
  };
  let store = "";
  let canary: Canary;
  let agent: ChildProcess | undefined;
  let publicBlob = "";
  let agentSocket = "";
  let needles: Buffer[] = [];
  /** Where each place a secret could land is, as files and directories to search. */
  const places: Record<string, string[]> = {};
  const outputs: string[] = [];
  const linkedExports: Record<string, string> = {};
  let localOutput = "";
  let hostPasswdBefore = "";

  beforeAll(async () => {
    hostPasswdBefore = sha256(readFileSync("/etc/passwd"));
    store = world.store(mode);
    canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    addProbeKit(path.join(ctx, "kit"));

    const secretsDir = world.dir("secrets", mode);
    const secretFile = path.join(secretsDir, "s");
    writeFileSync(secretFile, values.file, { mode: 0o600 });
    const linkTarget = path.join(secretsDir, "linked-target");
    writeFileSync(linkTarget, values.linked, { mode: 0o600 });
    const link = path.join(secretsDir, "link");
    symlinkSync(linkTarget, link);
    for (const file of [secretFile, linkTarget]) chownToMode(mode, file);
    const started = await startAgent(mode, world.dir("agent", mode));
    agent = started.agent;
    agentSocket = started.socket;
    publicBlob = started.publicBlob;
    needles = [
      ...secretForms(values.file),
      ...secretForms(values.env),
      ...secretForms(values.linked),
      ...secretForms(started.privateSeed),
    ];

    const out = world.dir("out", mode);
    const at = (name: string) => path.join(out, name);
    const common = [
      "--secret",
      `id=s,src=${secretFile}`,
      "--secret",
      "id=e,env=SECRET_SOURCE",
      "--secret",
      `id=l,src=${link}`,
      "--ssh",
      `default=${started.socket}`,
      "--build-arg",
      `CANARY=${canary.dir}`,
    ];
    const env = { SECRET_SOURCE: values.env };
    const build = (what: string, args: string[]) => {
      const result = world.tbuild(mode, store, ["build", ...common, ...args, ctx], { env });
      outputs.push(result.stdout, result.stderr);
      if (result.status !== 0) throw new Error(`${what} failed (${result.status}): ${result.stderr}`);
      return result;
    };
    const saveLog = (name: string, text: string | Buffer) => {
      writeFileSync(at(name), text);
      return at(name);
    };

    const plain = build("the plain build", [
      "--progress=plain",
      "--target",
      "secrets",
      "-t",
      "secrets:latest",
      "--metadata-file",
      at("metadata.json"),
      "--cache-to",
      `type=local,dest=${at("cache")},mode=max`,
    ]);
    places["the plain progress log"] = [saveLog("plain.log", plain.stdout + plain.stderr)];
    places["--metadata-file"] = [at("metadata.json")];
    places["the cache exported to a directory (mode=max)"] = [at("cache")];

    const rawjson = build("the rawjson build", [
      "--no-cache",
      "--progress=rawjson",
      "--target",
      "secrets",
      "--cache-to",
      `type=registry,ref=${registry.host}/hostile-secrets-${mode}:cache,mode=max`,
      "-o",
      `type=oci,dest=${at("image-oci.tar")}`,
    ]);
    // A step's output is base64 in rawjson: decoded too.
    const decoded = (rawjson.stdout + rawjson.stderr)
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => (JSON.parse(line) as { data?: string }).data)
      .filter((data): data is string => data !== undefined)
      .map((data) => Buffer.from(data, "base64").toString("latin1"))
      .join("\n");
    places["the rawjson progress log, its step output decoded"] = [
      saveLog("rawjson.log", rawjson.stdout + rawjson.stderr),
      saveLog("rawjson-decoded.log", decoded),
    ];
    places["the cache exported to a registry (mode=max)"] = [registry.dir];
    places["-o type=oci"] = [at("image-oci.tar")];

    const [file, ...args] = tbuildCommandLine(
      mode,
      store,
      [
        "build",
        ...common,
        "--no-cache",
        "--progress=tty",
        "--target",
        "secrets",
        "-o",
        `type=docker,dest=${at("image-docker.tar")},name=secrets:docker`,
        ctx,
      ],
      { env },
    );
    const tty = runOnTerminal([file!, ...args], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } });
    outputs.push(tty.output.toString());
    if (tty.status !== 0) throw new Error(`the tty build failed (${tty.status}): ${tty.output}`);
    places["the tty progress log"] = [saveLog("tty.log", tty.output)];
    places["-o type=docker"] = [at("image-docker.tar")];

    build("the tar export", ["--target", "secrets", "-o", `type=tar,dest=${at("image.tar")}`]);
    places["-o type=tar"] = [at("image.tar")];
    localOutput = at("image-local");
    build("the local export", ["--target", "secrets", "-o", `type=local,dest=${localOutput}`]);
    places["-o type=local"] = [localOutput];

    const inspect = world.tbuild(mode, store, ["inspect", "secrets:latest"]);
    outputs.push(inspect.stdout, inspect.stderr);
    if (inspect.status !== 0) throw new Error(`tbuild inspect failed: ${inspect.stderr}`);
    places["tbuild inspect (config and history)"] = [saveLog("inspect.json", inspect.stdout)];

    for (const { stage } of LINKED_TARGETS) {
      linkedExports[stage] = at(`stage-${stage}`);
      build(`the ${stage} stage`, [
        "--progress=plain",
        "--target",
        stage,
        "-o",
        `type=local,dest=${linkedExports[stage]}`,
      ]);
    }
    // Last, so that it holds whatever every build above left.
    places["the store: every file, every layer blob decompressed"] = [store];
    places["the store's cache index"] = [path.join(store, "cache")];
  }, 600_000);

  afterAll(() => {
    agent?.kill();
  });

  it("gives each secret to its RUN step: a file, an env= variable, a symlinked source (followed, as Docker does), the ssh agent", () => {
    const read = (name: string) => readFileSync(path.join(localOutput, name), "utf8").trim();
    expect(read("from-file")).toBe(sha256(values.file));
    expect(read("from-env")).toBe(sha256(values.env));
    expect(read("from-link")).toBe(sha256(values.linked));
    expect(read("agent-keys")).toBe(`keys 1\n${publicBlob} hostile-key`);
  });

  it("mounts a secret with target=/etc/passwd over the container's, leaving the image's and the host's as they were", async () => {
    expect(readFileSync(path.join(localOutput, "over-passwd"), "utf8").trim()).toBe(sha256(values.file));
    expect(readFileSync(path.join(localOutput, "etc/passwd"), "utf8")).toBe(
      readFileSync(path.join(await busyboxRootfs(), "etc/passwd"), "utf8"),
    );
    expect(sha256(readFileSync("/etc/passwd"))).toBe(hostPasswdBefore);
  });

  it.each([
    "the store: every file, every layer blob decompressed",
    "the store's cache index",
    "the plain progress log",
    "the rawjson progress log, its step output decoded",
    "the tty progress log",
    "--metadata-file",
    "tbuild inspect (config and history)",
    "the cache exported to a directory (mode=max)",
    "the cache exported to a registry (mode=max)",
    "-o type=oci",
    "-o type=docker",
    "-o type=tar",
    "-o type=local",
  ])("leaves no secret and no private key in %s", (place) => {
    // The place exists and holds something: a search of nothing would find nothing.
    expect(
      places[place]!.map(
        (file) => execFileSync("du", ["-sb", file], { encoding: "utf8" }).split("\t")[0],
      ).map(Number),
    ).not.toContain(0);
    expect(placesHolding(places[place]!, needles)).toEqual([]);
  });

  it("leaves the ssh agent's host socket path in none of them", () => {
    expect(placesHolding(Object.values(places).flat(), [Buffer.from(agentSocket)])).toEqual([]);
  });

  describe.each(LINKED_TARGETS)(
    "a $kind mount whose target goes through a link ($how)",
    ({ stage, kind, top }) => {
      it("is mounted inside the container's root", () => {
        const seen = readFileSync(path.join(linkedExports[stage]!, "seen"), "utf8").trim();
        expect(seen).toBe(kind === "ssh" ? `keys 1\n${publicBlob} hostile-key` : sha256(values.file));
      });

      it("leaves no mount stub in the step's layer", () => {
        const root = linkedExports[stage]!;
        expect(readdirSync(root).sort()).toEqual([...top].sort());
        // Where a link pointed at the canary's host path, runc made that path inside the root: gone again.
        expect(readdirSync(path.join(root, "tmp"))).toEqual([]);
      });
    },
  );

  it("after a build killed while its step holds a secret, the next build leaves the secret in no file of the store", async () => {
    const value = `secret-killed-${randomBytes(16).toString("hex")}`;
    const secretFile = path.join(world.dir("killed", mode), "k");
    writeFileSync(secretFile, value, { mode: 0o600 });
    chownToMode(mode, secretFile);
    const ctx = world.context({
      Dockerfile: `FROM busybox\nRUN --mount=type=secret,id=k sh -c 'echo the step holds the secret; exec sleep ${NAP}'\n`,
    });
    const [file, ...args] = tbuildCommandLine(mode, store, [
      "build",
      "--no-cache",
      "--progress=plain",
      "--secret",
      `id=k,src=${secretFile}`,
      ctx,
    ]);
    // Its own process group, killed at once as `kill -9 -PGID` would: tbuild, the rootless re-exec, runc.
    const build = spawn(file!, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise((resolve) => build.once("exit", resolve));
    await new Promise<void>((resolve, reject) => {
      let said = "";
      const listen = (chunk: Buffer) => {
        said += chunk.toString();
        outputs.push(chunk.toString());
        if (/^#\d+ [\d.]+ the step holds the secret$/m.test(said)) resolve();
      };
      build.stdout!.on("data", listen);
      build.stderr!.on("data", listen);
      build.once("exit", (code) =>
        reject(new Error(`the build ended (${code}) before its step ran: ${said}`)),
      );
    });
    process.kill(-build.pid!, "SIGKILL");
    await exited;

    const next = world.tbuild(mode, store, [
      "build",
      "-q",
      world.context({ Dockerfile: "FROM busybox\nRUN true\n" }),
    ]);
    expect(next.status, next.stderr).toBe(0);
    expect(placesHolding([store], secretForms(value))).toEqual([]);
    expect(processesWith(`sleep ${NAP}`)).toEqual([]);
  });

  it("leaves the canary untouched, and its secret in no output", () => {
    canary.expectUntouched(...outputs);
  });

  it("leaves the store usable", () => {
    world.expectStoreUsable(mode, store);
  });
});
