/**
 * Small stand-ins for the two CI runners, doing what they document for the parts tbuild's
 * integrations use, so that tests run `action.yml` and the GitLab template as the runners would:
 *
 * - GitHub: a composite action's steps, with `${{ inputs.* }}`, `${{ github.action_path }}` and
 *   `${{ steps.*.outputs.* }}` expressions, `shell: bash` (`bash --noprofile --norc -eo pipefail`),
 *   a fresh `GITHUB_OUTPUT`/`GITHUB_ENV` file per step read back in the runner's format, and the
 *   action's outputs from its `outputs.*.value` expressions.
 * - GitLab: a job from an included template with the user's overrides, `extends`, `rules` (`if`
 *   comparisons of variables, `variables`, `when`), variables expanded from the predefined ones,
 *   and `before_script` then `script` in one `bash -eo pipefail` shell.
 *
 * Anything else in the files (another expression, another `if` form) throws, so a test never
 * passes on something these runners do not understand.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
  shell: string;
  env?: Record<string, string>;
  run: string;
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
  const runnerTemp = mkdtempSync(path.join(tmpdir(), "tbuild-runner-temp-"));
  const outputFiles: Record<string, string> = {};
  const addedEnv: Record<string, string> = {};
  const addedPath: string[] = [];
  let log = "";
  try {
    for (const [index, step] of action.runs.steps.entries()) {
      if (step.shell !== "bash") throw new Error(`shell not understood by the test runner: ${step.shell}`);
      const stepDir = mkdtempSync(path.join(runnerTemp, "step-"));
      const files = {
        GITHUB_OUTPUT: path.join(stepDir, "output"),
        GITHUB_ENV: path.join(stepDir, "env"),
        GITHUB_PATH: path.join(stepDir, "path"),
      };
      for (const file of Object.values(files)) writeFileSync(file, "");
      const script = path.join(stepDir, "script.sh");
      writeFileSync(script, evaluate(step.run, contexts, actionPath));
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
          RUNNER_TEMP: runnerTemp,
          ...files,
          ...stepEnv,
        },
        encoding: "utf8",
      });
      log += result.stdout + result.stderr;
      const key = step.id ?? String(index);
      outputFiles[key] = readFileSync(files.GITHUB_OUTPUT, "utf8");
      if (result.status !== 0) return { status: result.status ?? 1, log, outputs: {}, outputFiles };
      contexts.steps[key] = parseCommandFile(outputFiles[key]);
      Object.assign(addedEnv, parseCommandFile(readFileSync(files.GITHUB_ENV, "utf8")));
      addedPath.unshift(...readFileSync(files.GITHUB_PATH, "utf8").split("\n").filter(Boolean).reverse());
    }
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
  const script = [...(resolved.before_script ?? []), ...(resolved.script ?? [])].join("\n");
  const result = spawnSync("bash", ["-eo", "pipefail", "-c", script], {
    cwd: options.projectDir,
    env: { ...options.env, ...variables, GITLAB_CI: "true", CI: "true" },
    encoding: "utf8",
  });
  return { ran: true, status: result.status ?? 1, log: result.stdout + result.stderr, variables };
}
