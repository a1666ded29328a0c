import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { parseInstruction } from "../../frontend/instructions/index.js";
import type { CommandLine, Instruction } from "../../frontend/instructions/types.js";
import { ShellLex } from "../../frontend/shell/index.js";
import { parseDockerfile } from "../../frontend/syntax/index.js";
import { importRootfs, type RootfsSource } from "../../oci/archive/index.js";
import { hostPlatform, parsePlatform } from "../../oci/platform.js";
import { creationTime, parseSourceDateEpoch } from "../../oci/source-date-epoch.js";
import type { ContainerConfig } from "../../oci/spec.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";
import { parseImageTag } from "../values.js";

/** The instructions `docker import --change` accepts (docker's `validCommitCommands`). */
const CHANGE_INSTRUCTIONS = new Set([
  "cmd",
  "entrypoint",
  "env",
  "expose",
  "label",
  "onbuild",
  "stopsignal",
  "user",
  "volume",
  "workdir",
]);

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [sourceArg, refArg, ...extra] = args.positionals;
  if (sourceArg === undefined || refArg === undefined || extra.length > 0) {
    throw new UsageError(
      "tbuild import takes a root filesystem (FILE, DIR or - for standard input) and a REF",
    );
  }
  const name = parseImageTag(refArg, "tbuild import");
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : hostPlatform();
  const config = applyChanges((args.values.change as string[] | undefined) ?? []);
  // SOURCE_DATE_EPOCH, as BuildKit honours it, makes an import reproducible; else now.
  const created = creationTime(parseSourceDateEpoch(ctx.env.SOURCE_DATE_EPOCH));
  const source = await rootfsSource(sourceArg, ctx);
  const message = (args.values.message as string | undefined) ?? `Imported from ${sourceArg}`;

  const store = await openCommandStore(ctx);
  const imported = await importRootfs(store.content, source, {
    platform,
    config,
    created,
    comment: message,
    signal: ctx.signal,
    onSkip: (relative, reason) => ctx.warn(`skipped ${relative}: ${reason}`),
  });
  await store.images.put(name, imported.descriptor);
  ctx.stdout.write(`${imported.descriptor.digest}\n`);
  return 0;
}

async function rootfsSource(text: string, ctx: CommandContext): Promise<RootfsSource> {
  if (text === "-") {
    return { kind: "archive", stream: process.stdin, name: "standard input" };
  }
  const file = path.resolve(ctx.cwd, text);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(file);
  } catch (err) {
    throw new TbuildError(
      "E_NO_SUCH_FILE",
      `cannot import ${text}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or directory" : (err as Error).message}`,
    );
  }
  if (info.isDirectory()) return { kind: "directory", path: file };
  return { kind: "archive", stream: createReadStream(file, { highWaterMark: 1 << 20 }), name: text };
}

/**
 * The container config `--change` instructions describe, applied in order to an empty one, as
 * `docker import` does: values expand `$VAR` from the ENV set so far; shell-form CMD and
 * ENTRYPOINT run under `/bin/sh -c`.
 */
export function applyChanges(changes: string[]): ContainerConfig {
  const config: ContainerConfig = {};
  const env = new Map<string, string>();
  const lexer = new ShellLex();
  let cmdSet = false;
  for (const change of changes) {
    const ast = parseDockerfile(change, { file: "--change" });
    for (const node of ast.instructions) {
      if (!CHANGE_INSTRUCTIONS.has(node.name)) {
        throw new UsageError(
          `--change ${JSON.stringify(change)}: ${node.name.toUpperCase()} cannot be changed on import (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)`,
        );
      }
      const instruction = parseInstruction(node, { file: "--change", lines: ast.lines, warn: () => {} });
      cmdSet = applyChange(config, instruction, (word) => lexer.processWord(word, env), env, cmdSet);
    }
  }
  return config;
}

function commandArgs(command: CommandLine): string[] {
  return command.form === "exec" ? command.argv : ["/bin/sh", "-c", command.command];
}

/** Applies one instruction; returns whether CMD has been set (ENTRYPOINT clears an inherited one only). */
function applyChange(
  config: ContainerConfig,
  ins: Instruction,
  expand: (word: string) => string,
  env: Map<string, string>,
  cmdSet: boolean,
): boolean {
  switch (ins.kind) {
    case "cmd":
      config.Cmd = commandArgs(ins.command);
      return true;
    case "entrypoint":
      config.Entrypoint = commandArgs(ins.command);
      if (!cmdSet) config.Cmd = null;
      return cmdSet;
    case "env":
      for (const kv of ins.vars) {
        const key = expand(kv.key);
        const value = expand(kv.value);
        env.set(key, value);
        config.Env = [...(config.Env ?? []).filter((e) => !e.startsWith(`${key}=`)), `${key}=${value}`];
      }
      return cmdSet;
    case "label":
      config.Labels ??= {};
      for (const kv of ins.labels) config.Labels[expand(kv.key)] = expand(kv.value);
      return cmdSet;
    case "expose":
      config.ExposedPorts ??= {};
      for (const port of ins.ports.map(expand)) {
        for (const key of portKeys(port)) config.ExposedPorts[key] = {};
      }
      return cmdSet;
    case "volume":
      config.Volumes ??= {};
      for (const volume of ins.volumes.map(expand)) {
        if (volume === "") throw new UsageError("--change VOLUME: a volume cannot be an empty string");
        config.Volumes[volume] = {};
      }
      return cmdSet;
    case "user":
      config.User = expand(ins.user);
      return cmdSet;
    case "workdir": {
      const dir = expand(ins.path);
      config.WorkingDir = path.posix.resolve(config.WorkingDir ?? "/", dir);
      return cmdSet;
    }
    case "stopsignal": {
      const signal = expand(ins.signal);
      if (!/^(?:\d+|(?:SIG)?[A-Z][A-Z0-9+-]*)$/i.test(signal)) {
        throw new UsageError(`--change STOPSIGNAL: invalid signal "${signal}"`);
      }
      config.StopSignal = signal;
      return cmdSet;
    }
    case "onbuild":
      config.OnBuild = [...(config.OnBuild ?? []), ins.expression];
      return cmdSet;
    default:
      throw new UsageError(`--change: ${ins.kind.toUpperCase()} cannot be changed on import`);
  }
}

/** `80`, `53/udp`, `8000-8001/tcp` → `80/tcp`, `53/udp`, `8000/tcp`, `8001/tcp`. */
function portKeys(spec: string): string[] {
  const match = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(spec);
  if (match === null)
    throw new UsageError(`--change EXPOSE: invalid port "${spec}" (e.g. 80, 53/udp, 8000-8010/tcp)`);
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (last > 65535 || last < first) throw new UsageError(`--change EXPOSE: invalid port range "${spec}"`);
  const protocol = (match[3] ?? "tcp").toLowerCase();
  const keys: string[] = [];
  for (let port = first; port <= last; port++) keys.push(`${port}/${protocol}`);
  return keys;
}
