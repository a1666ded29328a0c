/**
 * Small stand-ins for the two CI runners, doing what they document for the parts tbuild's
 * integrations use, so that tests run `action.yml` and the GitLab template as the runners would:
 *
 * - GitHub: a composite action's steps, with `${{ inputs.* }}`, `${{ github.action_path }}` and
 *   `${{ steps.*.outputs.* }}` expressions, `shell: bash` (`bash --noprofile --norc -eo pipefail`),
 *   a fresh `GITHUB_OUTPUT`/`GITHUB_ENV` file per step read back in the runner's format, and the
 *   action's outputs from its `outputs.*.value` expressions. Steps' `if:` (status functions and
 *   `==`/`!=` comparisons joined by `&&`; without a status function, `success()` is implied, so a
 *   failed step skips the rest but `!cancelled()` ones), and two `uses:` actions, as actions/cache
 *   documents them: `actions/cache/restore@v4` (the entry whose key equals `key`, else the newest
 *   whose key starts with `key` or, in turn, with a line of `restore-keys`, among entries saved for
 *   the same paths) and `actions/cache/save@v4` (saves `path` under `key`, unless an entry has that
 *   key already: entries are never overwritten; a missing path saves nothing, with a warning).
 * - GitLab: a job from an included template with the user's overrides, `extends`, `rules` (`if`
 *   comparisons of variables, `variables`, `when`), variables expanded from the predefined ones,
 *   and `before_script` then `script` in one `bash -eo pipefail` shell; a job's `cache:` (`key`,
 *   variables expanded; `paths` of files or directories in the project directory; `when`) restored
 *   before the script and saved after it, replacing what the key held, as GitLab's cache does.
 *
 * Anything else in the files (another expression, another `if` form) throws, so a test never
 * passes on something these runners do not understand.
 */
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parse } from "yaml";

export interface ActionInput {
  description?: string;
  required?: boolean;
  default?: string;
}

export interface CompositeStep {
  name?: string;
  id?: string;
  if?: string;
  /** A run step's. */
  shell?: string;
  env?: Record<string, string>;
  run?: string;
  /** A uses step's: the action and its inputs. */
  uses?: string;
  with?: Record<string, string>;
}

export interface ActionFile {
  name: string;
  inputs: Record<string, ActionInput>;
  outputs: Record<string, { description?: string; value: string }>;
  runs: { using: string; steps: CompositeStep[] };
}

export function readYaml<T>(file: string): T {
  return parse(readFileSync(file, "utf8")) as T;
}

/**
 * `$GITHUB_OUTPUT`/`$GITHUB_ENV` as the runner reads them: `name=value` lines, and
 * `name<<DELIMITER` ... `DELIMITER` for values of several lines.
 */
export function parseCommandFile(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const equals = line.indexOf("=");
    const heredoc = line.indexOf("<<");
    if (equals > 0 && (heredoc < 0 || equals < heredoc)) {
      result[line.slice(0, equals)] = line.slice(equals + 1);
      continue;
    }
    if (heredoc <= 0) throw new Error(`not a command file line: ${JSON.stringify(line)}`);
    const name = line.slice(0, heredoc);
    const delimiter = line.slice(heredoc + 2);
    const end = lines.indexOf(delimiter, i + 1);
    if (delimiter === "" || end < 0) throw new Error(`no closing delimiter for ${name}`);
    result[name] = lines.slice(i + 1, end).join("\n");
    i = end;
  }
  return result;
}

export interface ActionRun {
  status: number;
  /** Every step's stdout and stderr. */
  log: string;
  /** The action's outputs, from `outputs.*.value`. */
  outputs: Record<string, string>;
  /** Each step's `$GITHUB_OUTPUT` file as written, by step id (or index). */
  outputFiles: Record<string, string>;
}

export interface ActionRunOptions {
  /** The inputs given with `with:` (others take their defaults). */
  with: Record<string, string>;
  /** The job's environment (the runner's own variables come on top). */
  env: NodeJS.ProcessEnv;
  /** The workspace: every step's working directory. */
  cwd: string;
  /**
   * The runner's temp directory (RUNNER_TEMP), emptied when the job ends. Hosted runners use the
   * same path in every job; default: a fresh one.
   */
  runnerTemp?: string;
  /** The repository's actions cache, kept between runs: a directory (default: none, and a `uses: actions/cache/*` step throws). */
  cache?: string;
}

type Contexts = { inputs: Record<string, string>; steps: Record<string, Record<string, string>> };

function evaluate(text: string, contexts: Contexts, actionPath: string): string {
  return text.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expression: string) => {
    let match = /^inputs\.([\w-]+)$/.exec(expression);
    if (match) return contexts.inputs[match[1]!] ?? "";
    if (expression === "github.action_path") return actionPath;
    match = /^steps\.([\w-]+)\.outputs\.([\w-]+)$/.exec(expression);
    if (match) return contexts.steps[match[1]!]?.[match[2]!] ?? "";
    throw new Error(`expression not understood by the test runner: ${expression}`);
  });
}

/** A step's `if:` (with or without `${{ }}`), given whether an earlier step failed. */
function stepCondition(condition: string | undefined, contexts: Contexts, failed: boolean): boolean {
  const text = (condition ?? "success()").trim().replace(/^\$\{\{\s*([\s\S]*?)\s*\}\}$/, "$1");
  const operand = (word: string): string => {
    const quoted = /^'(.*)'$/.exec(word);
    if (quoted) return quoted[1]!;
    if (/^(inputs|steps)\.[\w.-]+$/.test(word)) return evaluate(`\${{ ${word} }}`, contexts, "");
    throw new Error(`if operand not understood by the test runner: ${word}`);
  };
  const statuses: Record<string, boolean> = {
    "success()": !failed,
    "failure()": failed,
    "always()": true,
    "!cancelled()": true,
    "cancelled()": false,
  };
  let hasStatus = false;
  let result = true;
  for (const term of text.split("&&").map((t) => t.trim())) {
    if (term in statuses) {
      hasStatus = true;
      result &&= statuses[term]!;
      continue;
    }
    const comparison = /^(\S+)\s*(==|!=)\s*(\S+)$/.exec(term);
    if (!comparison) throw new Error(`if expression not understood by the test runner: ${term}`);
    const equal = operand(comparison[1]!) === operand(comparison[3]!);
    result &&= comparison[2] === "==" ? equal : !equal;
  }
  return hasStatus ? result : result && !failed;
}

interface CacheEntry {
  key: string;
  /** What actions/cache calls the version: the paths, as given. */
  paths: string[];
  created: number;
}

/** The lines of a multi-line input, trimmed, without empty ones (as actions/cache reads `path`, `restore-keys`). */
const inputLines = (text: string | undefined) =>
  (text ?? "")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

function cacheEntries(cache: string): Array<CacheEntry & { dir: string }> {
  if (!existsSync(cache)) return [];
  return readdirSync(cache).map((name) => ({
    ...(JSON.parse(readFileSync(path.join(cache, name, "entry.json"), "utf8")) as CacheEntry),
    dir: path.join(cache, name),
  }));
}

/** `uses: actions/cache/restore@v4` or `actions/cache/save@v4`; gives the step's outputs and log. */
export function runCacheAction(
  uses: string,
  inputs: Record<string, string>,
  cache: string | undefined,
): { outputs: Record<string, string>; log: string } {
  if (cache === undefined) throw new Error(`${uses}: the test gave the runner no cache directory`);
  for (const name of Object.keys(inputs)) {
    if (!["path", "key", "restore-keys"].includes(name)) {
      throw new Error(`${uses} input not understood by the test runner: ${name}`);
    }
  }
  const paths = inputLines(inputs.path);
  const key = inputs.key ?? "";
  if (paths.length === 0 || key === "") throw new Error(`${uses}: path and key are required`);
  const entries = cacheEntries(cache).filter((e) => JSON.stringify(e.paths) === JSON.stringify(paths));
  if (uses === "actions/cache/restore@v4") {
    const newest = (match: (k: string) => boolean) =>
      entries.filter((e) => match(e.key)).sort((a, b) => b.created - a.created)[0];
    let found = newest((k) => k === key);
    for (const prefix of [key, ...inputLines(inputs["restore-keys"])]) {
      found ??= newest((k) => k.startsWith(prefix));
    }
    if (!found) {
      return {
        outputs: { "cache-hit": "false", "cache-primary-key": key },
        log: `Cache not found for input keys: ${[key, ...inputLines(inputs["restore-keys"])].join(", ")}\n`,
      };
    }
    for (const [index, target] of paths.entries()) {
      const saved = path.join(found.dir, String(index));
      if (existsSync(saved)) cpSync(saved, target, { recursive: true, preserveTimestamps: true });
    }
    return {
      outputs: {
        "cache-hit": String(found.key === key),
        "cache-primary-key": key,
        "cache-matched-key": found.key,
      },
      log: `Cache restored from key: ${found.key}\n`,
    };
  }
  if (uses === "actions/cache/save@v4") {
    if (cacheEntries(cache).some((e) => e.key === key)) {
      return {
        outputs: {},
        log: `Failed to save: Unable to reserve cache with key ${key}, another job may be creating this cache.\n`,
      };
    }
    if (!paths.some((p) => existsSync(p))) {
      return {
        outputs: {},
        log: "Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved.\n",
      };
    }
    // Creation order, which "newest" follows.
    const created = Math.max(0, ...cacheEntries(cache).map((e) => e.created)) + 1;
    mkdirSync(cache, { recursive: true });
    const dir = mkdtempSync(path.join(cache, "entry-"));
    for (const [index, source] of paths.entries()) {
      if (existsSync(source))
        cpSync(source, path.join(dir, String(index)), { recursive: true, preserveTimestamps: true });
    }
    const entry: CacheEntry = { key, paths, created };
    writeFileSync(path.join(dir, "entry.json"), JSON.stringify(entry));
    return { outputs: {}, log: `Cache saved with key: ${key}\n` };
  }
  throw new Error(`action not understood by the test runner: ${uses}`);
}

let runCount = 0;

/** Runs the composite action in `actionPath` (its action.yml) as a GitHub runner would. */
export function runCompositeAction(actionPath: string, options: ActionRunOptions): ActionRun {
  const action = readYaml<ActionFile>(path.join(actionPath, "action.yml"));
  if (action.runs.using !== "composite") throw new Error(`not a composite action: ${action.runs.using}`);
  for (const name of Object.keys(options.with)) {
    if (!(name in action.inputs)) throw new Error(`the action has no input ${name}`);
  }
  const inputs = Object.fromEntries(
    Object.entries(action.inputs).map(([name, input]) => [name, options.with[name] ?? input.default ?? ""]),
  );
  const contexts: Contexts = { inputs, steps: {} };
  const runnerTemp = options.runnerTemp ?? mkdtempSync(path.join(tmpdir(), "tbuild-runner-temp-"));
  mkdirSync(runnerTemp, { recursive: true });
  // Each call is one run of a workflow.
  const runId = String(process.pid * 1000 + ++runCount);
  const outputFiles: Record<string, string> = {};
  const addedEnv: Record<string, string> = {};
  const addedPath: string[] = [];
  let log = "";
  let status = 0;
  try {
    for (const [index, step] of action.runs.steps.entries()) {
      const key = step.id ?? String(index);
      if (!stepCondition(step.if, contexts, status !== 0)) continue;
      if (step.uses !== undefined) {
        const stepInputs = Object.fromEntries(
          Object.entries(step.with ?? {}).map(([name, value]) => [
            name,
            evaluate(String(value), contexts, actionPath),
          ]),
        );
        const result = runCacheAction(step.uses, stepInputs, options.cache);
        log += result.log;
        contexts.steps[key] = result.outputs;
        continue;
      }
      if (step.shell !== "bash") throw new Error(`shell not understood by the test runner: ${step.shell}`);
      const stepDir = mkdtempSync(path.join(runnerTemp, "step-"));
      const files = {
        GITHUB_OUTPUT: path.join(stepDir, "output"),
        GITHUB_ENV: path.join(stepDir, "env"),
        GITHUB_PATH: path.join(stepDir, "path"),
      };
      for (const file of Object.values(files)) writeFileSync(file, "");
      const script = path.join(stepDir, "script.sh");
      writeFileSync(script, evaluate(step.run ?? "", contexts, actionPath));
      const stepEnv = Object.fromEntries(
        Object.entries(step.env ?? {}).map(([name, value]) => [
          name,
          evaluate(String(value), contexts, actionPath),
        ]),
      );
      const basePath = options.env.PATH ?? process.env.PATH ?? "";
      const result = spawnSync("bash", ["--noprofile", "--norc", "-eo", "pipefail", script], {
        cwd: options.cwd,
        env: {
          ...options.env,
          ...addedEnv,
          PATH: [...addedPath, basePath].join(":"),
          GITHUB_ACTIONS: "true",
          GITHUB_ACTION_PATH: actionPath,
          GITHUB_WORKSPACE: options.cwd,
          GITHUB_RUN_ID: runId,
          GITHUB_RUN_ATTEMPT: "1",
          RUNNER_TEMP: runnerTemp,
          ...files,
          ...stepEnv,
        },
        encoding: "utf8",
      });
      log += result.stdout + result.stderr;
      outputFiles[key] = readFileSync(files.GITHUB_OUTPUT, "utf8");
      if (result.status !== 0) {
        // The first failure is the action's; later steps run only if their `if:` says so.
        if (status === 0) status = result.status ?? 1;
        continue;
      }
      contexts.steps[key] = parseCommandFile(outputFiles[key]);
      Object.assign(addedEnv, parseCommandFile(readFileSync(files.GITHUB_ENV, "utf8")));
      addedPath.unshift(...readFileSync(files.GITHUB_PATH, "utf8").split("\n").filter(Boolean).reverse());
    }
    if (status !== 0) return { status, log, outputs: {}, outputFiles };
    const outputs = Object.fromEntries(
      Object.entries(action.outputs).map(([name, output]) => [
        name,
        evaluate(output.value, contexts, actionPath),
      ]),
    );
    return { status: 0, log, outputs, outputFiles };
  } finally {
    rmSync(runnerTemp, { recursive: true, force: true });
  }
}

// GitLab

export interface GitLabRule {
  if?: string;
  variables?: Record<string, string>;
  when?: string;
}

export interface GitLabJob {
  extends?: string | string[];
  image?: string;
  stage?: string;
  variables?: Record<string, string>;
  before_script?: string[];
  script?: string[];
  rules?: GitLabRule[];
  artifacts?: { reports?: { dotenv?: string } };
  cache?: GitLabCache;
}

export interface GitLabCache {
  key?: string;
  paths?: string[];
  when?: "on_success" | "on_failure" | "always";
}

type Yaml = Record<string, unknown>;

function isHash(value: unknown): value is Yaml {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** GitLab's merge of `include`d files and `extends`: hashes deeply, everything else replaced. */
export function deepMerge(base: unknown, over: unknown): unknown {
  if (!isHash(base) || !isHash(over)) return over;
  const merged: Yaml = { ...base };
  for (const [key, value] of Object.entries(over)) merged[key] = deepMerge(base[key], value);
  return merged;
}

function resolveJob(config: Yaml, name: string, seen: string[] = []): GitLabJob {
  if (seen.includes(name)) throw new Error(`extends loop: ${[...seen, name].join(" -> ")}`);
  const job = config[name];
  if (!isHash(job)) throw new Error(`no job ${name}`);
  const parents = job.extends === undefined ? [] : ([] as string[]).concat(job.extends as string | string[]);
  let merged: unknown = {};
  for (const parent of parents) merged = deepMerge(merged, resolveJob(config, parent, [...seen, name]));
  const { extends: _, ...own } = job;
  return deepMerge(merged, own) as GitLabJob;
}

/** `$NAME` and `${NAME}` from `variables` (unknown names expand to nothing, as in GitLab). */
export function expandVariables(text: string, variables: Record<string, string | undefined>): string {
  return text.replace(/\$(?:\{(\w+)\}|(\w+))/g, (_, braced?: string, bare?: string) => {
    return variables[(braced ?? bare)!] ?? "";
  });
}

/** A rule's `if`: `$A == $B`, `$A != "text"`, or `$A` alone (set and not empty). */
function ruleMatches(condition: string, variables: Record<string, string | undefined>): boolean {
  const operand = (word: string): string | undefined => {
    if (/^\$\w+$/.test(word)) return variables[word.slice(1)];
    const quoted = /^"(.*)"$|^'(.*)'$/.exec(word);
    if (quoted) return quoted[1] ?? quoted[2];
    throw new Error(`rule operand not understood by the test runner: ${word}`);
  };
  const comparison = /^(\S+)\s*(==|!=)\s*(\S+)$/.exec(condition.trim());
  if (comparison) {
    const equal = operand(comparison[1]!) === operand(comparison[3]!);
    return comparison[2] === "==" ? equal : !equal;
  }
  const value = operand(condition.trim());
  return value !== undefined && value !== "";
}

export interface JobRun {
  /** Whether the rules let the job run at all. */
  ran: boolean;
  status: number;
  log: string;
  /** The job's variables as its script saw them. */
  variables: Record<string, string>;
}

export interface JobRunOptions {
  /** The user's `.gitlab-ci.yml` on top of the included template (deep-merged, as `include` does). */
  overrides?: Yaml;
  /** The variables GitLab predefines (CI_*). */
  predefined: Record<string, string>;
  /** Project CI/CD variables: they win over the YAML's. */
  project?: Record<string, string>;
  /** The machine's environment under the job (PATH, TBUILD_ROOT, DOCKER_CONFIG...). */
  env: NodeJS.ProcessEnv;
  /** CI_PROJECT_DIR: the clone, and the script's working directory. */
  projectDir: string;
  /** The runner's cache storage, kept between jobs: a directory (default: a cache nothing is kept in). */
  cache?: string;
  /**
   * The shell executor's user (default: this process's). The script, and the cache's restore and
   * save, run as that user, as gitlab-runner's shell executor runs them.
   */
  user?: string;
}

/** Copies `source` to `target` (parents made), as `user` when given, keeping modes and times. */
function copyAs(user: string | undefined, source: string, target: string): void {
  if (user === undefined) {
    cpSync(source, target, { recursive: true, preserveTimestamps: true });
    return;
  }
  const copied = spawnSync(
    "runuser",
    ["-u", user, "--", "sh", "-c", 'mkdir -p "$(dirname "$2")" && cp -a "$1" "$2"', "sh", source, target],
    { encoding: "utf8" },
  );
  if (copied.status !== 0) throw new Error(`the cache copy as ${user} failed: ${copied.stderr}`);
}

/** The directory of a job's cache entry, after checking its `cache:` is what the runner knows. */
function cacheEntryDir(cache: GitLabCache, storage: string, variables: Record<string, string>): string {
  for (const name of Object.keys(cache)) {
    if (!["key", "paths", "when"].includes(name))
      throw new Error(`cache:${name} not understood by the test runner`);
  }
  for (const p of cache.paths ?? []) {
    if (/[$*?[]/.test(p) || path.isAbsolute(p) || p.split("/").includes("..")) {
      throw new Error(`cache path not understood by the test runner: ${p}`);
    }
  }
  const key = expandVariables(cache.key ?? "default", variables);
  if (!/^[\w.-]+$/.test(key)) throw new Error(`cache key not understood by the test runner: ${key}`);
  return path.join(storage, key);
}

function restoreCache(cache: GitLabCache, entry: string, projectDir: string, user?: string): string {
  if (!existsSync(entry)) return `No cache found for ${path.basename(entry)}\n`;
  for (const p of cache.paths ?? []) {
    if (existsSync(path.join(entry, p))) copyAs(user, path.join(entry, p), path.join(projectDir, p));
  }
  return `Successfully extracted cache ${path.basename(entry)}\n`;
}

function saveCache(
  cache: GitLabCache,
  entry: string,
  projectDir: string,
  status: number,
  user?: string,
): string {
  const when = cache.when ?? "on_success";
  if (when === "on_success" ? status !== 0 : when === "on_failure" ? status === 0 : false) return "";
  rmSync(entry, { recursive: true, force: true });
  let log = "";
  for (const p of cache.paths ?? []) {
    const source = path.join(projectDir, p);
    if (existsSync(source)) {
      copyAs(user, source, path.join(entry, p));
    } else {
      log += `WARNING: ${p}: no matching files\n`;
    }
  }
  return `${log}Created cache ${path.basename(entry)}\n`;
}

/** Runs `job` of the template at `templateFile` as a GitLab runner's shell executor would. */
export function runGitLabJob(templateFile: string, job: string, options: JobRunOptions): JobRun {
  const config = deepMerge(readYaml<Yaml>(templateFile), options.overrides ?? {}) as Yaml;
  const resolved = resolveJob(config, job);
  const predefined = { ...options.predefined, CI_PROJECT_DIR: options.projectDir };
  let ruleVariables: Record<string, string> = {};
  if (resolved.rules) {
    const rule = resolved.rules.find((r) => r.if === undefined || ruleMatches(r.if, predefined));
    if (rule === undefined || rule.when === "never") return { ran: false, status: 0, log: "", variables: {} };
    ruleVariables = rule.variables ?? {};
  }
  const variables: Record<string, string> = { ...predefined };
  for (const [name, value] of Object.entries({ ...resolved.variables, ...ruleVariables })) {
    variables[name] = expandVariables(String(value), variables);
  }
  Object.assign(variables, options.project ?? {});
  const entry =
    resolved.cache && options.cache ? cacheEntryDir(resolved.cache, options.cache, variables) : undefined;
  let log = entry ? restoreCache(resolved.cache!, entry, options.projectDir, options.user) : "";
  const script = [...(resolved.before_script ?? []), ...(resolved.script ?? [])].join("\n");
  const env: NodeJS.ProcessEnv = { ...options.env, ...variables, GITLAB_CI: "true", CI: "true" };
  const shell = ["bash", "-eo", "pipefail", "-c", script];
  const assignments = Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
  const result =
    options.user === undefined
      ? spawnSync(shell[0]!, shell.slice(1), { cwd: options.projectDir, env, encoding: "utf8" })
      : spawnSync("runuser", ["-u", options.user, "--", "env", "-i", ...assignments, ...shell], {
          cwd: options.projectDir,
          env: { PATH: env.PATH },
          encoding: "utf8",
        });
  const status = result.status ?? 1;
  log += result.stdout + result.stderr;
  if (entry) log += saveCache(resolved.cache!, entry, options.projectDir, status, options.user);
  return { ran: true, status, log, variables };
}
