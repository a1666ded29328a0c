/**
 * What `docker run` makes of an image's config and its own flags: the container's config (kept
 * with the container, and what `commit` starts from) and the process it runs. Pure functions over
 * plain data, so each rule is testable without running anything.
 */
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { ContainerConfig } from "../oci/spec.js";

/** The `tbuild run` flags that shape the container's config. */
export interface RunRequest {
  /** `--entrypoint`: one word, as docker takes it; `""` clears the image's entrypoint. */
  entrypoint?: string;
  /** The words after IMAGE: they replace the image's Cmd. */
  args: string[];
  /** `K=V` entries from `--env-file`, then `-e`, in order; later ones win. */
  env: string[];
  /** `-w`. */
  workingDir?: string;
  /** `-u USER[:GROUP]`. */
  user?: string;
  /** `--stop-signal`: kept in the config as docker keeps it (`StopSignal`). */
  stopSignal?: string;
  /** Container paths of anonymous volumes (`-v /path`), added to `Volumes` as docker does. */
  anonymousVolumes?: string[];
}

/** The image config says nothing to run, and neither did the command line. */
export class NoCommandError extends TbuildError {
  constructor(image: string) {
    super(
      "E_NO_COMMAND",
      `image ${image} has no CMD or ENTRYPOINT: give the command to run after the image name (tbuild run ${image} COMMAND)`,
    );
  }
}

/**
 * The container's config: the image's, with the run flags applied as docker applies them.
 * `--entrypoint` replaces the entrypoint and drops the image's Cmd (an image's Cmd is the
 * arguments of its own entrypoint); arguments replace Cmd; `-e` entries replace image entries of
 * the same name; `-w` and `-u` replace WorkingDir and User.
 */
export function containerConfig(image: ContainerConfig, request: RunRequest): ContainerConfig {
  const config: ContainerConfig = structuredClone(image);
  if (request.entrypoint !== undefined) {
    config.Entrypoint = request.entrypoint === "" ? null : [request.entrypoint];
    config.Cmd = null;
  }
  if (request.args.length > 0) config.Cmd = [...request.args];
  if (request.env.length > 0) config.Env = mergeEnv(image.Env ?? [], request.env);
  if (request.workingDir !== undefined) {
    if (!path.posix.isAbsolute(request.workingDir)) {
      throw new UsageError(`-w ${request.workingDir}: the working directory must be an absolute path`);
    }
    config.WorkingDir = path.posix.resolve(request.workingDir);
  }
  if (request.user !== undefined) config.User = request.user;
  if (request.stopSignal !== undefined) config.StopSignal = request.stopSignal;
  for (const volume of request.anonymousVolumes ?? []) {
    config.Volumes = { ...config.Volumes, [volume]: {} };
  }
  return config;
}

/** `base` entries with `overrides` applied by name, in docker's order: replaced in place, new ones appended. */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const result = [...base];
  for (const entry of overrides) {
    const name = envName(entry);
    const at = result.findIndex((e) => envName(e) === name);
    if (at >= 0) result[at] = entry;
    else result.push(entry);
  }
  return result;
}

function envName(entry: string): string {
  const eq = entry.indexOf("=");
  return eq < 0 ? entry : entry.slice(0, eq);
}

/** Entrypoint then Cmd: the process's argv. */
export function processArgs(config: ContainerConfig, imageName: string): string[] {
  const args = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
  if (args.length === 0) throw new NoCommandError(imageName);
  return args;
}

/**
 * `--env-file` text: `K=V` lines, `K` alone for the host's value (left out when the host has
 * none), blank lines and `#` comments skipped, as docker reads it.
 */
export function parseEnvFile(text: string, file: string, hostEnv: NodeJS.ProcessEnv): string[] {
  const entries: string[] = [];
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.replace(/^\s+/, "");
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    const name = eq < 0 ? line.trimEnd() : line.slice(0, eq);
    if (name === "" || /\s/.test(name)) {
      throw new UsageError(`${file}:${index + 1}: invalid variable name ${JSON.stringify(name)}`);
    }
    if (eq >= 0) entries.push(line);
    else if (hostEnv[name] !== undefined) entries.push(`${name}=${hostEnv[name]}`);
  }
  return entries;
}

/** `-e` values: `K=V` as given, `K` alone from the host (left out when the host has none). */
export function parseEnvFlags(values: readonly string[], hostEnv: NodeJS.ProcessEnv): string[] {
  const entries: string[] = [];
  for (const value of values) {
    const eq = value.indexOf("=");
    if (eq === 0) throw new UsageError(`-e "${value}": the name before "=" is empty`);
    if (eq > 0) entries.push(value);
    else if (hostEnv[value] !== undefined) entries.push(`${value}=${hostEnv[value]}`);
  }
  return entries;
}
