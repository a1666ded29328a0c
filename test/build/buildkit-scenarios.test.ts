/**
 * BuildKit's Dockerfile integration scenarios as a conformance suite: each scenario ported from
 * moby/buildkit's frontend/dockerfile/dockerfile_*_test.go (test/fixtures/buildkit-scenarios)
 * is built with the real CLI (`bin/tbuild build`) in a store holding busybox (made from Debian's
 * busybox-static) and an `alpine` stand-in (busybox with /etc/alpine-release), and its result is
 * checked as the Go test checks BuildKit's: the exported files, the image config and history, or
 * the build's error. A scenario marked `knownDifference` is counted as skipped with its reason,
 * never as a pass: its test asserts that the difference is still there, so that fixing it in
 * tbuild says to drop the mark. The end prints `N ported, P pass, F fail, S skipped (...)`.
 *
 * Builds run two at a time (the machine has two cores); scenarios share one store unless they
 * prune or need a cold cache, as BuildKit's tests share one daemon.
 *
 * Every build that gets as far as planning also checks `tbuild debug graph`: given the build's
 * command line, it must print the graph the build solved (the build's `build.planned` event,
 * recorded through TBUILD_EVENTS_FILE). It runs in-process, the cheap way to do it ~200 times.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { cp, mkdir, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BuildEvent } from "../../build/events.js";
import { runCommand } from "../../cli/run-command.js";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import {
  type BuildFlags,
  checkFiles,
  checkTarFiles,
  type Expectation,
  jsonContains,
  jsonEqual,
  loadScenarios,
  makeScenarioBusyboxRootfs,
  makeTar,
  type Placeholders,
  readTar,
  runTbuild,
  type Scenario,
  type Step,
  shortHash,
  substitute,
  writeEntries,
} from "./buildkit-scenarios-harness.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/buildkit-scenarios/", import.meta.url));
const scenarios = loadScenarios(FIXTURES);
/** Builds at once: the machine has two cores. */
const POOL_SIZE = 2;
const BUILD_TIMEOUT_MS = 120_000;
const SCENARIO_TIMEOUT_MS = 300_000;

const tempDir = tempDirs();
let work: string;
/** A promise made on first use, then shared. */
function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => {
    made ??= make();
    return made;
  };
}
const sharedStore = once(() => makeStore("shared"));
const busyboxRootfsDir = once(() => makeScenarioBusyboxRootfs(path.join(work, "busybox-rootfs")));
const templateStore = once(() => makeTemplateStore());
let registry: RunningRegistry;
let echoServer: net.Server;
let placeholders: Placeholders;
const outcomes = new Map<string, "pass" | "fail" | "known">();
/** Builds whose plan `debug graph` printed the same, and what differed in the others. */
const planChecks = { compared: 0, differences: [] as string[] };
const started = new Set<string>();

/** Runs `task` when one of the pool's slots is free. */
const queue: (() => void)[] = [];
let running = 0;
async function inPool<T>(task: () => Promise<T>): Promise<T> {
  if (running >= POOL_SIZE) await new Promise<void>((resolve) => queue.push(resolve));
  running++;
  try {
    return await task();
  } finally {
    running--;
    queue.shift()?.();
  }
}

beforeAll(async () => {
  work = tempDir("bk-scenarios");
  registry = await startRegistry();
  echoServer = await startEchoServer("foo");
  placeholders = {
    REGISTRY: registry.host,
    ECHO_PORT: String((echoServer.address() as AddressInfo).port),
  };
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  await new Promise((resolve) => echoServer?.close(resolve));
  // A scenario left out by a test filter (-t) did not run; one that started and has no outcome failed.
  const counts = { pass: 0, fail: 0, known: 0, "not run": 0 };
  for (const scenario of scenarios)
    counts[outcomes.get(scenario.name) ?? (started.has(scenario.name) ? "fail" : "not run")]++;
  const known = scenarios.filter((s) => outcomes.get(s.name) === "known");
  console.log(
    [
      "",
      `BuildKit scenarios: ${scenarios.length} ported, ${counts.pass} pass, ${counts.fail} fail, ${counts.known} skipped (known differences, each with its reason:)` +
        (counts["not run"] ? ` [${counts["not run"]} not run: filtered out]` : ""),
      ...known.map((s) => `  - ${s.name}: ${s.knownDifference}`),
      "Not ported (out of scope, or needing what this machine lacks): see test/fixtures/buildkit-scenarios/README.md",
      "",
    ].join("\n"),
  );
});

/**
 * A store of its own with the base images: a copy of a template store made once (a store holds no
 * absolute paths; the template is never built in).
 */
async function makeStore(name: string): Promise<string> {
  const template = await templateStore();
  const store = path.join(work, "stores", name);
  await cp(template, store, { recursive: true, verbatimSymlinks: true });
  return store;
}

/** A store with the busybox stand-in as `busybox:latest` and the `alpine:latest` stand-in. */
async function makeTemplateStore(): Promise<string> {
  const name = "template";
  const store = path.join(work, "stores", name);
  const imported = await runTbuild(
    ["import", await busyboxRootfsDir(), "busybox:latest", "--change", 'CMD ["sh"]'],
    { ...storeEnv(store), SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
    work,
    BUILD_TIMEOUT_MS,
  );
  if (imported.status !== 0) throw new Error(`tbuild import of busybox failed: ${imported.stderr}`);
  const context = path.join(work, "stores", `${name}-alpine`);
  await mkdir(context, { recursive: true });
  await writeFile(
    path.join(context, "Dockerfile"),
    "FROM busybox:latest\nCOPY alpine-release /etc/alpine-release\n",
  );
  await writeFile(path.join(context, "alpine-release"), "3.20.3\n");
  const built = await runTbuild(
    ["build", "--progress=plain", "-t", "alpine:latest", context],
    storeEnv(store),
    work,
    BUILD_TIMEOUT_MS,
  );
  if (built.status !== 0) throw new Error(`building the alpine stand-in failed: ${built.stderr}`);
  return store;
}

function storeEnv(store: string): Record<string, string> {
  return { TBUILD_ROOT: store, TBUILD_CONFIG: "/dev/null" };
}

interface HttpResource {
  body: Buffer;
  etag?: string;
  lastModified?: number;
}

/**
 * A scenario's HTTP server (each Go test starts its own): its resources by path, with ETag and
 * Last-Modified, and the files of `staticRoot` (a git repository, served as git's dumb HTTP
 * protocol serves one).
 */
function startHttpServer(resources: Map<string, HttpResource>, staticRoot?: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = (req.url ?? "/").split("?")[0]!;
    const resource = resources.get(url) ?? (staticRoot ? staticFile(staticRoot, url) : undefined);
    if (!resource) {
      res.writeHead(404).end();
      return;
    }
    const headers: Record<string, string> = { "Content-Length": String(resource.body.length) };
    if (resource.etag) headers.ETag = `"${resource.etag}"`;
    if (resource.lastModified)
      headers["Last-Modified"] = new Date(resource.lastModified * 1000).toUTCString();
    res.writeHead(200, headers);
    res.end(req.method === "HEAD" ? undefined : resource.body);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function staticFile(root: string, url: string): HttpResource | undefined {
  const file = path.join(root, ...url.split("/").map(decodeURIComponent));
  if (!file.startsWith(`${root}/`) || !existsSync(file) || !lstatSync(file).isFile()) return undefined;
  return { body: readFileSync(file) };
}

/** The context as a git repository tagged `tag` (the Go test's git init, add, commit, tag). */
async function makeGitRepo(context: string, tag: string): Promise<void> {
  const env = {
    GIT_AUTHOR_DATE: "2000-01-01T00:00:00Z",
    GIT_COMMITTER_DATE: "2000-01-01T00:00:00Z",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_CONFIG_NOSYSTEM: "1",
  };
  for (const args of [
    ["init", "-q"],
    ["config", "--local", "user.email", "test"],
    ["config", "--local", "user.name", "test"],
    ["add", "."],
    ["commit", "-q", "-m", tag],
    ["tag", tag],
    ["update-server-info"],
  ]) {
    await new Promise<void>((resolve, reject) =>
      execFile("git", args, { cwd: context, env: { ...process.env, ...env } }, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  }
}

/** BuildKit's echoserver: answers every connection with `text` and closes it. */
function startEchoServer(text: string): Promise<net.Server> {
  const server = net.createServer((socket) => socket.end(text));
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

interface StepResult {
  localDir?: string;
  ociDir?: string;
  digest?: string;
}

/** Everything a later step may look back at. */
function referencedSteps(steps: Step[]): Set<number> {
  const refs = new Set<number>();
  for (const step of steps) {
    for (const want of Object.values(step.expect?.files ?? {})) {
      if (typeof want === "object" && want !== null) {
        if (want.sameAs !== undefined) refs.add(want.sameAs);
        if (want.differsFrom !== undefined) refs.add(want.differsFrom);
      }
    }
    if (step.expect?.ociIndexSameAs !== undefined) refs.add(step.expect.ociIndexSameAs);
    for (const source of Object.values(step.buildContexts ?? {})) {
      if (typeof source === "object" && "ociLayoutOfStep" in source) refs.add(source.ociLayoutOfStep);
    }
  }
  return refs;
}

function needsImage(expect: Expectation): boolean {
  return (
    expect.config !== undefined ||
    expect.configContains !== undefined ||
    expect.configNotContains !== undefined ||
    expect.configNotEmpty !== undefined ||
    expect.configItemMatches !== undefined ||
    expect.image !== undefined ||
    expect.imageNotEmpty !== undefined ||
    expect.history !== undefined ||
    expect.historyCreated !== undefined ||
    expect.diffIds !== undefined
  );
}

async function inspect(store: string, ref: string): Promise<Record<string, unknown>> {
  const result = await runTbuild(["inspect", ref], storeEnv(store), work, BUILD_TIMEOUT_MS);
  if (result.status !== 0) throw new Error(`tbuild inspect ${ref} failed: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { config: Record<string, unknown> }).config;
}

function seconds(time: unknown): number | undefined {
  return typeof time === "string" ? Math.floor(Date.parse(time) / 1000) : undefined;
}

/** Runs one scenario; gives the list of what did not hold (empty: it passed). */
async function runScenario(scenario: Scenario): Promise<string[]> {
  const id = shortHash(`${scenario.fixture}/${scenario.name}`);
  const dir = path.join(work, id);
  const context = path.join(dir, "context");
  const resources = new Map<string, HttpResource>();
  const server =
    scenario.http || scenario.gitRepo
      ? await startHttpServer(resources, scenario.gitRepo ? context : undefined)
      : undefined;
  try {
    return await runScenarioSteps(scenario, id, dir, context, resources, server);
  } finally {
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  }
}

async function runScenarioSteps(
  scenario: Scenario,
  id: string,
  dir: string,
  context: string,
  resources: Map<string, HttpResource>,
  server: http.Server | undefined,
): Promise<string[]> {
  // Each scenario has a registry namespace of its own, as each Go test has a registry of its own.
  const values: Placeholders = {
    ...placeholders,
    REGISTRY: `${placeholders.REGISTRY}/s${id}`,
    SCENARIO_DIR: dir,
    ...(server ? { HTTP: `http://127.0.0.1:${(server.address() as AddressInfo).port}` } : {}),
  };
  for (const [resourcePath, resource] of Object.entries(scenario.http ?? {})) {
    const body = resource.tar
      ? makeTar(resource.tar, resource.gzip)
      : Buffer.from(substitute(resource.content ?? "", values), "utf8");
    resources.set(resourcePath, { body, etag: resource.etag, lastModified: resource.lastModified });
  }
  const steps: Step[] = scenario.steps ?? [scenario];
  // Cache mounts are shared by a whole store, as by a whole BuildKit daemon: a scenario that
  // counts what its cache mount holds needs a store of its own, as it had a daemon of its own.
  const usesCacheMounts = [scenario.dockerfile, ...steps.map((s) => s.dockerfile)].some((d) =>
    d?.includes("type=cache"),
  );
  const isolated = scenario.isolatedStore || usesCacheMounts || steps.some((s) => s.prune);
  const store = isolated ? await makeStore(id) : await sharedStore();

  const dockerfileDir = scenario.dockerfileOutside ? path.join(dir, "dockerfile") : context;
  const dockerfilePath = path.join(dockerfileDir, scenario.dockerfilePath ?? "Dockerfile");
  mkdirSync(context, { recursive: true });
  mkdirSync(dockerfileDir, { recursive: true });
  await writeEntries(context, scenario.context ?? {}, values);
  if (scenario.gitRepo) await makeGitRepo(context, scenario.gitRepo.tag);

  const refs = referencedSteps(steps);
  const results: StepResult[] = [];
  const problems: string[] = [];
  for (const [index, step] of steps.entries()) {
    const label = steps.length > 1 ? `step ${index}: ` : "";
    if (step !== scenario) {
      if (step.freshContext) {
        rmSync(context, { recursive: true, force: true });
        mkdirSync(context, { recursive: true });
      }
      await writeEntries(context, step.context ?? {}, values);
    }
    const dockerfile =
      step.dockerfile ?? (index === 0 || step.freshContext ? scenario.dockerfile : undefined);
    if (dockerfile !== undefined) await writeFile(dockerfilePath, substitute(dockerfile, values));
    for (const ref of step.rmi ?? []) {
      const removed = await runTbuild(
        ["rmi", substitute(ref, values)],
        storeEnv(store),
        work,
        BUILD_TIMEOUT_MS,
      );
      if (removed.status !== 0) problems.push(`${label}tbuild rmi ${ref} failed: ${removed.stderr}`);
    }
    if (step.prune) {
      const pruned = await runTbuild(["prune", "--all"], storeEnv(store), work, BUILD_TIMEOUT_MS);
      if (pruned.status !== 0) problems.push(`${label}tbuild prune --all failed: ${pruned.stderr}`);
    }
    const stepDir = path.join(dir, `step-${index}`);
    mkdirSync(stepDir, { recursive: true });
    const { result, stepProblems } = await runStep(scenario, step, index, {
      store,
      context,
      dockerfilePath: step.file ? path.join(context, step.file) : dockerfilePath,
      resources,
      stepDir,
      values,
      keepLocal: refs.has(index),
      earlier: results,
    });
    results.push(result);
    problems.push(...stepProblems.map((p) => `${label}${p}`));
  }
  return problems;
}

interface StepContext {
  resources: Map<string, HttpResource>;
  store: string;
  context: string;
  dockerfilePath: string;
  stepDir: string;
  values: Placeholders;
  keepLocal: boolean;
  earlier: StepResult[];
}

function buildFlags(flags: BuildFlags, ctx: StepContext, stepDir: string): string[] {
  const args: string[] = [];
  for (const [k, v] of Object.entries(flags.args ?? {}))
    args.push("--build-arg", `${k}=${substitute(v, ctx.values)}`);
  if (flags.target) args.push("--target", flags.target);
  if (flags.noCache) args.push("--no-cache");
  for (const stage of flags.noCacheFilter ?? []) args.push("--no-cache-filter", stage);
  if (flags.network) args.push("--network", flags.network);
  for (const [k, v] of Object.entries(flags.labels ?? {})) args.push("--label", `${k}=${v}`);
  if (flags.platform) args.push("--platform", flags.platform);
  if (flags.cacheTo) args.push("--cache-to", substitute(flags.cacheTo, ctx.values));
  for (const from of flags.cacheFrom ?? []) args.push("--cache-from", substitute(from, ctx.values));
  for (const [secretId, value] of Object.entries(flags.secrets ?? {})) {
    const file = path.join(stepDir, `secret-${secretId}`);
    mkdirSync(stepDir, { recursive: true });
    writeFileSync(file, value, { mode: 0o600 });
    args.push("--secret", `id=${secretId},src=${file}`);
  }
  return args;
}

async function runStep(
  scenario: Scenario,
  step: Step,
  index: number,
  ctx: StepContext,
): Promise<{ result: StepResult; stepProblems: string[] }> {
  const expectation: Expectation = step.expect ?? { success: true };
  const wantsError = expectation.error !== undefined || expectation.errorMatches !== undefined;
  const relative = scenario.cwdRelative;
  const fileFlag = scenario.noFileFlag
    ? []
    : ["-f", relative ? path.relative(ctx.context, ctx.dockerfilePath) : ctx.dockerfilePath];
  const args = ["build", "--progress=plain", ...fileFlag, ...buildFlags(step, ctx, ctx.stepDir)];
  const result: StepResult = {};

  for (const [name, source] of Object.entries(step.buildContexts ?? {})) {
    if (typeof source === "string") args.push("--build-context", `${name}=${substitute(source, ctx.values)}`);
    else if ("context" in source) {
      const bc = path.join(ctx.stepDir, `context-${name}`);
      mkdirSync(bc, { recursive: true });
      await writeEntries(bc, source.context, ctx.values);
      args.push("--build-context", `${name}=${bc}`);
    } else {
      const layout = ctx.earlier[source.ociLayoutOfStep]?.ociDir;
      args.push("--build-context", `${name}=oci-layout://${layout}`);
    }
  }

  const localDir = path.join(ctx.stepDir, "out");
  if (!wantsError && (expectation.files || expectation.emptyDirs || ctx.keepLocal)) {
    args.push("-o", `type=local,dest=${localDir}`);
    result.localDir = localDir;
  }
  const tarFile = path.join(ctx.stepDir, "out.tar");
  if (!wantsError && expectation.tarFiles) args.push("-o", `type=tar,dest=${tarFile}`);
  const ociDir = path.join(ctx.stepDir, "oci");
  const wantsOci =
    expectation.ociIndex !== undefined ||
    expectation.ociIndexSameAs !== undefined ||
    step.ociName !== undefined;
  if (!wantsError && wantsOci) {
    const names = step.ociName ? `,"name=${substitute(step.ociName, ctx.values)}"` : "";
    args.push("-o", `type=oci,dest=${ociDir},tar=false${names}`);
    result.ociDir = ociDir;
  }
  let imageRef: string | undefined;
  if (step.tag) {
    imageRef = substitute(step.tag, ctx.values);
    args.push("-t", imageRef);
    if (step.push) args.push("--push");
  } else if (!wantsError && needsImage(expectation)) {
    imageRef = `bkscenario/${shortHash(`${scenario.fixture}/${scenario.name}`)}-${index}:latest`;
    args.push("-o", `type=image,name=${imageRef}`);
  }
  const metadataFile = path.join(ctx.stepDir, "metadata.json");
  args.push("--metadata-file", metadataFile, relative ? "." : ctx.context);

  let agent: ChildProcess | undefined;
  const eventsFile = path.join(ctx.stepDir, "events.jsonl");
  const env: Record<string, string> = {
    ...storeEnv(ctx.store),
    ...(step.env ?? {}),
    TBUILD_EVENTS_FILE: eventsFile,
  };
  if (step.ssh) {
    const socket = path.join(ctx.stepDir, "agent.sock");
    agent = spawn("ssh-agent", ["-D", "-a", socket], { stdio: "ignore" });
    await waitForSocket(socket);
    args.splice(args.length - 1, 0, "--ssh", `default=${socket}`);
  }
  let run: Awaited<ReturnType<typeof runTbuild>>;
  try {
    run = await runTbuild(args, env, ctx.context, BUILD_TIMEOUT_MS);
    await compareDebugGraph(`${scenario.name} step ${index}`, args, env, ctx.context, eventsFile);
  } finally {
    if (agent?.pid) process.kill(agent.pid);
  }
  const output = `${run.stdout}\n${run.stderr}`;
  const problems: string[] = [];
  const tail = () => output.trim().split("\n").slice(-12).join("\n");

  if (wantsError) {
    if (run.status === 0) problems.push("the build succeeded; the Go test expects it to fail");
    else {
      if (typeof expectation.error === "string" && !output.includes(expectation.error)) {
        problems.push(`the error does not say ${JSON.stringify(expectation.error)}:\n${tail()}`);
      }
      if (expectation.errorMatches && !new RegExp(expectation.errorMatches).test(output)) {
        problems.push(`the error does not match /${expectation.errorMatches}/:\n${tail()}`);
      }
      for (const line of expectation.errorLines ?? []) {
        // `Dockerfile:LINE` in the message, or the line marked `>>>` in the excerpt of the Dockerfile.
        const named = new RegExp(`Dockerfile:${line}(?!\\d)`).test(output);
        const marked = new RegExp(`^\\s*${line} \\| >>>`, "m").test(output);
        if (!named && !marked) {
          problems.push(`the error does not point at Dockerfile:${line}:\n${tail()}`);
        }
      }
    }
  } else if (run.status !== 0) {
    problems.push(`the build failed (exit ${run.status}):\n${tail()}`);
    return { result, stepProblems: problems };
  }
  for (const line of expectation.logContains ?? []) {
    if (!output.includes(line)) problems.push(`the output does not show ${JSON.stringify(line)}`);
  }
  for (const line of expectation.logNotContains ?? []) {
    if (output.includes(line)) problems.push(`the output shows ${JSON.stringify(line)}`);
  }
  if (wantsError) return { result, stepProblems: problems };

  if (existsSync(metadataFile)) {
    const metadata = JSON.parse(readFileSync(metadataFile, "utf8")) as Record<string, unknown>;
    result.digest = metadata["containerimage.digest"] as string | undefined;
  }
  if (expectation.files) {
    problems.push(
      ...checkFiles(
        localDir,
        expectation.files,
        (stepIndex, file) => {
          const earlierDir = ctx.earlier[stepIndex]?.localDir;
          const full = earlierDir && path.join(earlierDir, file);
          return full && existsSync(full) ? readFileSync(full) : undefined;
        },
        (kind, name) => {
          if (kind === "context") return readFileSync(path.join(ctx.context, name));
          return ctx.resources.get(name)?.body;
        },
      ),
    );
  }
  for (const emptyDir of expectation.emptyDirs ?? []) {
    const full = path.join(localDir, emptyDir);
    if (!existsSync(full)) problems.push(`${emptyDir}: missing`);
    else if (readdirSync(full).length > 0)
      problems.push(`${emptyDir}: not empty (${readdirSync(full).join(", ")})`);
  }
  if (expectation.tarFiles) problems.push(...checkTarFiles(await readTar(tarFile), expectation.tarFiles));
  if (expectation.digestSameAs !== undefined) {
    const before = ctx.earlier[expectation.digestSameAs]?.digest;
    if (!before || before !== result.digest) {
      problems.push(`image digest ${result.digest}, step ${expectation.digestSameAs}'s was ${before}`);
    }
  }
  if (wantsOci) {
    const index = JSON.parse(readFileSync(path.join(ociDir, "index.json"), "utf8")) as {
      manifests: { annotations?: Record<string, string> }[];
    };
    if (expectation.ociIndexSameAs !== undefined) {
      const beforeDir = ctx.earlier[expectation.ociIndexSameAs]?.ociDir;
      const before = beforeDir ? readFileSync(path.join(beforeDir, "index.json"), "utf8") : undefined;
      if (before !== readFileSync(path.join(ociDir, "index.json"), "utf8")) {
        problems.push(`index.json differs from step ${expectation.ociIndexSameAs}'s`);
      }
    }
    const want = expectation.ociIndex;
    if (want?.manifests !== undefined && index.manifests.length !== want.manifests) {
      problems.push(`index.json has ${index.manifests.length} manifests, expected ${want.manifests}`);
    }
    if (want?.sameManifests) {
      const strip = (m: Record<string, unknown>) => ({ ...m, annotations: undefined });
      const first = index.manifests[0] as Record<string, unknown> | undefined;
      if (!first || !index.manifests.every((m) => jsonEqual(strip(m), strip(first)))) {
        problems.push("index.json manifests are not the same image (digest, platform, media type, size)");
      }
    }
    for (const [i, annotations] of (want?.annotations ?? []).entries()) {
      if (!jsonContains(index.manifests[i]?.annotations ?? {}, annotations)) {
        problems.push(
          `index.json manifest ${i} annotations ${JSON.stringify(index.manifests[i]?.annotations)}`,
        );
      }
    }
  }
  if (imageRef && (needsImage(expectation) || expectation.digestSameAs !== undefined)) {
    problems.push(...(await checkImage(ctx.store, imageRef, expectation)));
  }
  return { result, stepProblems: problems };
}

async function checkImage(store: string, ref: string, want: Expectation): Promise<string[]> {
  if (!needsImage(want)) return [];
  const problems: string[] = [];
  const image = await inspect(store, ref);
  const config = (image.config ?? {}) as Record<string, unknown>;
  for (const [field, value] of Object.entries(want.config ?? {})) {
    if (!jsonEqual(config[field], value)) {
      problems.push(`config.${field} is ${JSON.stringify(config[field])}, expected ${JSON.stringify(value)}`);
    }
  }
  for (const [field, value] of Object.entries(want.configContains ?? {})) {
    if (!jsonContains(config[field], value)) {
      problems.push(
        `config.${field} is ${JSON.stringify(config[field])}, expected to hold ${JSON.stringify(value)}`,
      );
    }
  }
  for (const [field, value] of Object.entries(want.configNotContains ?? {})) {
    for (const item of value as unknown[]) {
      if (jsonContains(config[field], [item])) problems.push(`config.${field} holds ${JSON.stringify(item)}`);
    }
  }
  for (const [field, pattern] of Object.entries(want.configItemMatches ?? {})) {
    const items = Array.isArray(config[field]) ? (config[field] as unknown[]) : [];
    if (!items.some((item) => typeof item === "string" && new RegExp(pattern).test(item))) {
      problems.push(
        `config.${field} is ${JSON.stringify(config[field])}, with no item matching /${pattern}/`,
      );
    }
  }
  for (const field of want.configNotEmpty ?? []) {
    if (config[field] === undefined || config[field] === "" || config[field] === null) {
      problems.push(`config.${field} is empty`);
    }
  }
  for (const [field, value] of Object.entries(want.image ?? {})) {
    const got = field === "created" ? seconds(image.created) : image[field];
    if (!jsonEqual(got, value))
      problems.push(`${field} is ${JSON.stringify(got)}, expected ${JSON.stringify(value)}`);
  }
  for (const field of want.imageNotEmpty ?? []) {
    if (!image[field]) problems.push(`${field} is empty`);
  }
  const history = (image.history ?? []) as { created_by?: string; empty_layer?: boolean; created?: string }[];
  if (want.historyCreated !== undefined) {
    for (const [i, entry] of history.entries()) {
      if (seconds(entry.created) !== want.historyCreated) {
        problems.push(`history[${i}].created is ${entry.created}, expected ${want.historyCreated}`);
      }
    }
  }
  if (want.history) {
    const base = want.history.base
      ? ((await inspect(store, want.history.base)).history as unknown[]).length
      : 0;
    if (want.history.count !== undefined && history.length !== want.history.count) {
      problems.push(`history has ${history.length} entries, expected ${want.history.count}`);
    }
    if (want.history.added !== undefined && history.length - base !== want.history.added) {
      problems.push(
        `history has ${history.length - base} entries after the base's ${base}, expected ${want.history.added}`,
      );
    }
    for (const entry of want.history.entries ?? []) {
      const got = history[base + entry.index];
      const where = `history[${base}+${entry.index}]`;
      if (!got) {
        problems.push(`${where} is missing`);
        continue;
      }
      if (entry.createdByContains !== undefined && !got.created_by?.includes(entry.createdByContains)) {
        problems.push(
          `${where}.created_by ${JSON.stringify(got.created_by)} lacks ${JSON.stringify(entry.createdByContains)}`,
        );
      }
      if (entry.createdByNotContains !== undefined && got.created_by?.includes(entry.createdByNotContains)) {
        problems.push(
          `${where}.created_by ${JSON.stringify(got.created_by)} holds ${JSON.stringify(entry.createdByNotContains)}`,
        );
      }
      if (entry.emptyLayer !== undefined && (got.empty_layer ?? false) !== entry.emptyLayer) {
        problems.push(`${where}.empty_layer is ${got.empty_layer ?? false}, expected ${entry.emptyLayer}`);
      }
      if (entry.created && !got.created) problems.push(`${where}.created is not set`);
    }
  }
  if (want.diffIds) {
    const diffIds = ((image.rootfs as { diff_ids?: string[] } | undefined)?.diff_ids ?? []).length;
    const base = want.diffIds.base
      ? ((await inspect(store, want.diffIds.base)).rootfs as { diff_ids: string[] }).diff_ids.length
      : 0;
    if (want.diffIds.count !== undefined && diffIds !== want.diffIds.count) {
      problems.push(`rootfs has ${diffIds} layers, expected ${want.diffIds.count}`);
    }
    if (want.diffIds.added !== undefined && diffIds - base !== want.diffIds.added) {
      problems.push(
        `rootfs has ${diffIds - base} layers after the base's ${base}, expected ${want.diffIds.added}`,
      );
    }
  }
  return problems;
}

/** Waits for ssh-agent to create its socket (a file system event, not a timer). */
async function waitForSocket(socket: string): Promise<void> {
  const watcher = watch(path.dirname(socket));
  try {
    const created = new Promise<void>((resolve) =>
      watcher.on("change", () => existsSync(socket) && resolve()),
    );
    if (!existsSync(socket)) await created;
  } finally {
    watcher.close();
  }
}

/**
 * `tbuild debug graph` with the build's flags, in-process: its graph, root and image config must
 * be those of the build's `build.planned` event. A build that failed before planning is skipped.
 */
async function compareDebugGraph(
  label: string,
  buildArgs: string[],
  env: Record<string, string>,
  cwd: string,
  eventsFile: string,
): Promise<void> {
  if (!existsSync(eventsFile)) return;
  const planned = readFileSync(eventsFile, "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as BuildEvent)
    .find((event) => event.type === "build.planned");
  if (!planned) return;
  let stdout = "";
  let stderr = "";
  const sink = (append: (text: string) => void) =>
    ({
      write: (chunk: string) => {
        append(String(chunk));
        return true;
      },
    }) as unknown as NodeJS.WritableStream;
  const status = await runCommand(["debug", "graph", ...buildArgs.slice(1)], {
    stdout: sink((t) => {
      stdout += t;
    }),
    stderr: sink((t) => {
      stderr += t;
    }),
    env: { ...process.env, ...env },
    cwd,
    signal: new AbortController().signal,
    warn: (message) => {
      stderr += `WARNING: ${message}\n`;
    },
  }).catch((err: unknown) => {
    stderr += String(err);
    return 1;
  });
  if (status !== 0) {
    planChecks.differences.push(`${label}: debug graph failed (${status}): ${stderr}`);
    return;
  }
  const printed = JSON.parse(stdout) as LoweredBuild;
  const same =
    JSON.stringify([printed.graph, printed.root, printed.image]) ===
    JSON.stringify([planned.graph, planned.root, planned.image]);
  if (same) planChecks.compared++;
  else planChecks.differences.push(`${label}: debug graph printed another graph than the build solved`);
}

describe("BuildKit Dockerfile scenarios, built by tbuild", () => {
  it("has scenarios to run", () => {
    expect(scenarios.length).toBeGreaterThan(0);
  });
  for (const scenario of scenarios) {
    const title = `${scenario.name} (${scenario.test})${scenario.knownDifference ? " [known difference]" : ""}`;
    it.concurrent(
      title,
      async () => {
        started.add(scenario.name);
        const problems = await inPool(() => runScenario(scenario));
        if (scenario.knownDifference && scenario.knownDifferenceIntermittent && problems.length === 0) {
          outcomes.set(scenario.name, "known");
          return;
        }
        if (scenario.knownDifference) {
          outcomes.set(scenario.name, problems.length > 0 ? "known" : "fail");
          expect(
            problems,
            `${scenario.name} now passes: drop its knownDifference (${scenario.knownDifference})`,
          ).not.toEqual([]);
          return;
        }
        outcomes.set(scenario.name, problems.length === 0 ? "pass" : "fail");
        expect(problems, `${scenario.fixture}: ${scenario.name}`).toEqual([]);
      },
      SCENARIO_TIMEOUT_MS,
    );
  }
  it("debug graph printed the graph each build solved, given the build's flags", () => {
    expect(planChecks.differences).toEqual([]);
    // Most scenarios plan (those that fail earlier are Dockerfile errors): each was compared.
    expect(planChecks.compared).toBeGreaterThan(started.size / 2);
  });
});
