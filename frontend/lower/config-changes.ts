/**
 * `import --change` and `commit --change`: Dockerfile instructions applied to a container config
 * by the same code a Dockerfile's stages use (config.ts). Apart from config.ts so that a build,
 * which may take its Dockerfile's syntax tree from the parse cache, does not load the parser.
 */
import { UsageError } from "../../errors/index.js";
import type { ContainerConfig } from "../../oci/spec.js";
import { parseInstruction } from "../instructions/index.js";
import { ShellLex } from "../shell/index.js";
import { parseDockerfile } from "../syntax/index.js";
import { applyConfigInstruction, type ConfigScope, type ConfigWords, isConfigInstruction } from "./config.js";

/** The instructions `--change` accepts (docker's `validCommitCommands`, and STOPSIGNAL). */
const CHANGE_KINDS = new Set([
  "cmd",
  "entrypoint",
  "env",
  "expose",
  "healthcheck",
  "label",
  "onbuild",
  "stopsignal",
  "user",
  "volume",
  "workdir",
]);

/**
 * `config` with `--change` instructions applied in order, as `docker import` and `docker commit`
 * apply them: by the Dockerfile's own rules (applyConfigInstruction), values expanding `$VAR`
 * from the config's Env as it stands. A bad change is a UsageError naming it.
 */
export function applyConfigChanges(config: ContainerConfig, changes: readonly string[]): ContainerConfig {
  const image = { config: structuredClone(config) };
  const env = new Map<string, string>();
  for (const entry of image.config.Env ?? []) {
    const eq = entry.indexOf("=");
    env.set(eq < 0 ? entry : entry.slice(0, eq), eq < 0 ? "" : entry.slice(eq + 1));
  }
  const scope: ConfigScope = {
    image,
    env,
    cmdSet: false,
    workdir: image.config.WorkingDir || "/",
    user: image.config.User ?? "",
  };
  const lexer = new ShellLex();
  for (const change of changes) {
    const fail = (reason: string) => new UsageError(`--change ${JSON.stringify(change)}: ${reason}`);
    const words: ConfigWords = {
      word: (text) => lexer.processWord(text, scope.env),
      words: (text) => lexer.processWords(text, scope.env),
      fail,
    };
    const ast = parseDockerfile(change, { file: "--change" });
    for (const node of ast.instructions) {
      if (!CHANGE_KINDS.has(node.name)) {
        throw fail(
          `${node.name.toUpperCase()} cannot be changed on import or commit (use CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)`,
        );
      }
      const instruction = parseInstruction(node, { file: "--change", lines: ast.lines, warn: () => {} });
      if (!isConfigInstruction(instruction)) throw fail(`${node.name.toUpperCase()} cannot be changed`);
      try {
        applyConfigInstruction(scope, instruction, words);
      } catch (err) {
        if (err instanceof UsageError) throw err;
        throw fail((err as Error).message);
      }
    }
  }
  return image.config;
}
