/**
 * tbuild as an npm package: the tarball `npm pack` makes, installed into an empty project, works
 * as docs/api.md says. Each `ts example` block of docs/api.md is written into that project and
 * run with Node (which strips the types), against a local registry and a store holding busybox;
 * and the examples are type-checked with `tsc --noEmit` (strict, no skipLibCheck) under
 * TypeScript 5 and under the current major (the project's own compiler), so that the package's
 * .d.ts files stand on their own.
 *
 * The examples run as the unprivileged user `tbuild-test`, in a store of theirs: the library's
 * promise is the CLI's, rootless building (it re-runs itself in tbuild's user namespace, as the CLI
 * does; api/rootless.ts). As root it runs in-process, which the CLI's own tests cover.
 *
 * The install prefers npm's cache (`--prefer-offline`); `--ignore-scripts` skips the `node`
 * package's download of a Node binary, which the library does not need (it runs on the caller's).
 */
import { execFile, execFileSync, spawnSync } from "node:child_process";
import { chmodSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { dirOwnedBy } from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const exec = promisify(execFile);
const tempDir = tempDirs();
const docs = readFileSync(path.join(projectRoot, "docs", "api.md"), "utf8");
const examples = [...docs.matchAll(/```ts example\n([\s\S]*?)```/g)].map((m) => m[1]!);
/** The unprivileged user with subordinate ids that `.ci/install` creates. */
const ROOTLESS_USER = "tbuild-test";
const node = path.join(projectRoot, "node_modules/node/bin/node");

let registry: RunningRegistry;
let project: string;
let store: string;
let temp: string;

/** Runs `script` of the project as the rootless user, with only the environment the examples read (plus `extra`). */
function runAsUser(script: string, extra: Record<string, string> = {}) {
  const home = execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!;
  const assignments = Object.entries({
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: home,
    TBUILD_ROOT: store,
    TBUILD_CONFIG: "/dev/null",
    REGISTRY: registry.host,
    // The examples' own temporary directories go with the test's.
    TMPDIR: temp,
    ...extra,
  }).map(([k, v]) => `${k}=${v}`);
  return exec("runuser", ["-u", ROOTLESS_USER, "--", "env", "-i", ...assignments, node, script], {
    cwd: project,
  });
}

beforeAll(async () => {
  registry = await startRegistry();
  const work = tempDir("api");
  chmodSync(work, 0o755);
  store = path.join(work, "store");
  await importBusybox(store, "busybox");
  execFileSync("chown", ["-R", ROOTLESS_USER, store]);
  temp = dirOwnedBy(work, "tmp", ROOTLESS_USER);

  const packed = tempDir("api-pack");
  await exec("npm", ["pack", "--ignore-scripts", "--pack-destination", packed], { cwd: projectRoot });
  const tarball = path.join(packed, readdirSync(packed).find((f) => f.endsWith(".tgz"))!);
  project = path.join(work, "project");
  execFileSync("mkdir", [project]);
  writeFileSync(
    path.join(project, "package.json"),
    `${JSON.stringify({ name: "uses-tbuild", private: true, type: "module" })}\n`,
  );
  const typesNode = JSON.parse(
    readFileSync(path.join(projectRoot, "node_modules/@types/node/package.json"), "utf8"),
  ).version as string;
  await exec(
    "npm",
    [
      "install",
      "--prefer-offline",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      tarball,
      "typescript@5",
      `@types/node@${typesNode}`,
    ],
    { cwd: project, env: { ...process.env, npm_config_loglevel: "error" } },
  );
  writeFileSync(
    path.join(project, "tsconfig.json"),
    `${JSON.stringify({
      compilerOptions: {
        module: "nodenext",
        moduleResolution: "nodenext",
        target: "es2024",
        types: ["node"],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        allowImportingTsExtensions: true,
      },
      include: ["*.ts"],
    })}\n`,
  );
  for (const [i, code] of examples.entries()) {
    writeFileSync(path.join(project, `example-${i + 1}.ts`), code);
  }
}, 180_000);

afterAll(async () => {
  await registry?.stop();
});

describe("the npm package, installed into an empty project", () => {
  it("has the examples docs/api.md promises", () => {
    expect(examples.length).toBeGreaterThanOrEqual(3);
    expect(examples[0]).toMatch(
      /import \{[^}]*\bbuild\b[^}]*\bpull\b[^}]*\bpush\b[^}]*\brun\b[^}]*\} from "tbuild"/,
    );
  });

  it.each([
    ["TypeScript 5", () => path.join(project, "node_modules", "typescript", "bin", "tsc")],
    ["the current TypeScript", () => path.join(projectRoot, "node_modules", "typescript", "bin", "tsc")],
  ])("type-checks the examples under %s (strict, no skipLibCheck)", async (_, tsc) => {
    const version = (await exec(process.execPath, [tsc(), "--version"], { cwd: project })).stdout;
    expect(version).toMatch(/Version \d+\./);
    const result = await exec(process.execPath, [tsc(), "-p", "."], { cwd: project }).catch(
      (err: { stdout: string; stderr: string; code: number }) => err,
    );
    expect(`${result.stdout}${result.stderr}`).toBe("");
  });

  it("builds, pushes to the registry, pulls and runs an image, as an unprivileged user (the first example)", async () => {
    const { stdout } = await runAsUser("example-1.ts");
    const built = /^built (sha256:[0-9a-f]{64}): .*RUN echo "version 1" > \/version$/m.exec(stdout);
    expect(built, stdout).not.toBeNull();
    // What the registry gives back is the image built and pushed.
    expect(stdout).toContain(`pulled ${built![1]}\n`);
    // The container's own output, from the image pulled back from the registry.
    expect(stdout).toMatch(/^version 1$/m);
    const tags = await fetch(`http://${registry.host}/v2/app/tags/list`).then((r) => r.json());
    expect(tags).toEqual({ name: "app", tags: ["1"] });
  });

  it("cancels a build (E_CANCELED), reports a failed RUN as a BuildStepFailedError, then builds again (the second example)", async () => {
    const { stdout } = await runAsUser("example-2.ts");
    expect(stdout).toMatch(/^E_CANCELED: canceled/m);
    expect(stdout).toMatch(
      /^E_STEP_FAILED: \[2\/2\] RUN echo "no network today" && exit 3 exited with 3, saying [0-9.]+ no network today$/m,
    );
    expect(stdout).toMatch(/^built sha256:[0-9a-f]{64}$/m);
    // Nothing the calls started is left: no process runs with this store in its environment.
    expect(processesUsing(store)).toEqual([]);
  });

  it("hands a secret given by env to the build in the user namespace, through no command line or file", async () => {
    writeFileSync(path.join(project, "secret.ts"), SECRET_SCRIPT);
    const { stdout } = await runAsUser("secret.ts");
    const token = /^token ([0-9a-f]{32})$/m.exec(stdout)?.[1];
    expect(token, stdout).toBeDefined();
    // The RUN step compared the secret with its hash: the build worked only if it arrived.
    expect(stdout).toMatch(/^built sha256:[0-9a-f]{64}, the secret in 0 command lines$/m);
    const found = spawnSync("grep", ["-rlF", "-D", "skip", token!, store, temp], { encoding: "utf8" });
    expect(found.stdout).toBe("");
    expect(found.status).toBe(1);
  });

  it("runs a container on streams it was given, as an unprivileged user: its input, output, errors and exit code", async () => {
    writeFileSync(path.join(project, "run-streams.ts"), RUN_STREAMS_SCRIPT);
    const { stdout } = await runAsUser("run-streams.ts");
    expect(JSON.parse(stdout)).toEqual({ exitCode: 4, out: "HELLO\nWORLD\n", err: "to stderr\n" });
  });

  it("lists the store's images", async () => {
    const { stdout } = await runAsUser("example-3.ts");
    expect(stdout).toMatch(/^docker\.io\/library\/busybox:latest sha256:[0-9a-f]{64}$/m);
  });
});

/**
 * A build with a secret given by env, made up by the script itself: it prints the secret, and
 * how many command lines on the machine held it while the step ran.
 */
const SECRET_SCRIPT = `import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { build } from "tbuild";

const token = randomBytes(16).toString("hex");
process.env.TOKEN = token;
console.log(\`token \${token}\`);
const hash = createHash("sha256").update(token).digest("hex");
const context = mkdtempSync(path.join(tmpdir(), "secret-"));
writeFileSync(
  path.join(context, "Dockerfile"),
  \`FROM busybox\\nRUN --mount=type=secret,id=token,env=TOKEN test "$(printf %s "$TOKEN" | sha256sum)" = "\${hash}  -"\\n\`,
);
let inArgv = 0;
const result = await build(
  { context, noCache: true, secrets: [{ id: "token", env: "TOKEN" }] },
  {
    onEvent: (e) => {
      if (e.type !== "vertex.started" || e.internal) return;
      for (const pid of readdirSync("/proc").filter((name) => /^[0-9]+$/.test(name))) {
        try {
          if (readFileSync(\`/proc/\${pid}/cmdline\`, "utf8").includes(token)) inArgv++;
        } catch {}
      }
    },
  },
);
console.log(\`built \${result.digest}, the secret in \${inArgv} command lines\`);
`;

/** run() with a stream for each of stdin, stdout and stderr; prints what came out, as JSON. */
const RUN_STREAMS_SCRIPT = `import { PassThrough, Readable } from "node:stream";
import { run } from "tbuild";

const collect = () => {
  const stream = new PassThrough();
  const text = { value: "" };
  stream.on("data", (chunk) => (text.value += chunk));
  return { stream, text };
};
const out = collect();
const err = collect();
const { exitCode } = await run("busybox", {
  remove: true,
  command: ["sh", "-c", "tr a-z A-Z; echo to stderr >&2; exit 4"],
  stdin: Readable.from(["hello\\n", "world\\n"]),
  stdout: out.stream,
  stderr: err.stream,
});
console.log(JSON.stringify({ exitCode, out: out.text.value, err: err.text.value }));
`;

/** The processes whose environment names `store` (tbuild's children inherit the caller's). */
function processesUsing(store: string): string[] {
  const using: string[] = [];
  for (const pid of readdirSync("/proc").filter((name) => /^[0-9]+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`TBUILD_ROOT=${store}`)) {
        using.push(readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " "));
      }
    } catch {
      // gone meanwhile
    }
  }
  return using;
}
