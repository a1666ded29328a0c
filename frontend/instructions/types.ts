/**
 * Typed instructions: one per Dockerfile instruction, with every flag parsed and validated, made
 * from the syntax tree by `parseInstruction`. Values are as written (not yet variable-expanded):
 * the lowering expands them with the stage's ARG/ENV scope, because expansion depends on it.
 */
import type { Heredoc, InstructionNode, Position, SourceRange } from "../syntax/ast.js";

interface Base {
  /** The syntax node this came from: position, original text, comments. */
  node: InstructionNode;
  range: SourceRange;
}

/** A command in shell form (one string, run by the stage's SHELL) or exec form (argv). */
export type CommandLine = { form: "shell"; command: string } | { form: "exec"; argv: string[] };

export interface KeyValue {
  key: string;
  value: string;
}

export interface FromInstruction extends Base {
  kind: "from";
  /** Image reference or stage name, unexpanded (global ARGs apply). */
  image: string;
  /** The `AS name`, lower-cased as BuildKit does. */
  stageName?: string;
  platform?: string;
}

export type MountSpec =
  | {
      type: "bind";
      target: string;
      source?: string;
      /** A stage name, index or image; absent means the build context. */
      from?: string;
      readwrite: boolean;
    }
  | {
      type: "cache";
      target: string;
      id?: string;
      source?: string;
      from?: string;
      sharing: "shared" | "private" | "locked";
      readonly: boolean;
      uid?: number;
      gid?: number;
      mode?: number;
    }
  | { type: "tmpfs"; target: string; size?: number }
  | {
      type: "secret";
      id: string;
      /** Default `/run/secrets/<id>` unless `env` is given. */
      target?: string;
      env?: string;
      required: boolean;
      uid?: number;
      gid?: number;
      mode?: number;
    }
  | {
      type: "ssh";
      id: string;
      target?: string;
      required: boolean;
      uid?: number;
      gid?: number;
      mode?: number;
    };

export interface RunInstruction extends Base {
  kind: "run";
  command: CommandLine;
  /** `RUN <<EOF` bodies; when the command is only a heredoc, the first heredoc is the script. */
  heredocs: Heredoc[];
  /** Raw `--mount` values: parsed after expansion by `parseMount`, since ARGs may appear in them. */
  mounts: string[];
  /** Where each `--mount` flag is in the source (same order as `mounts`): the position `parseMount` reports. */
  mountPositions: Position[];
  network?: "default" | "none" | "host";
  security?: "sandbox" | "insecure";
}

export interface CmdInstruction extends Base {
  kind: "cmd";
  command: CommandLine;
}

export interface EntrypointInstruction extends Base {
  kind: "entrypoint";
  command: CommandLine;
}

export interface ShellInstruction extends Base {
  kind: "shell";
  argv: string[];
}

export interface LabelInstruction extends Base {
  kind: "label";
  labels: KeyValue[];
}

export interface MaintainerInstruction extends Base {
  kind: "maintainer";
  maintainer: string;
}

export interface ExposeInstruction extends Base {
  kind: "expose";
  /** Words such as `80`, `80/udp`, `8000-8010/tcp`, unexpanded. */
  ports: string[];
}

export interface EnvInstruction extends Base {
  kind: "env";
  vars: KeyValue[];
}

export interface CopyInstruction extends Base {
  kind: "copy" | "add";
  /** Sources then destination are split out after expansion; these are the raw words. */
  sources: string[];
  dest: string;
  /** Sources written as heredocs (`COPY <<EOF /dest`). */
  heredocs: Heredoc[];
  from?: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  exclude: string[];
  /** ADD only. */
  checksum?: string;
  keepGitDir?: boolean;
  unpack?: boolean;
}

export interface VolumeInstruction extends Base {
  kind: "volume";
  volumes: string[];
}

export interface UserInstruction extends Base {
  kind: "user";
  user: string;
}

export interface WorkdirInstruction extends Base {
  kind: "workdir";
  path: string;
}

export interface ArgInstruction extends Base {
  kind: "arg";
  /** Several per line: `ARG A B=2`. */
  args: { key: string; value?: string }[];
}

export interface OnbuildInstruction extends Base {
  kind: "onbuild";
  /** The inner instruction's text as written, stored in the image config's OnBuild. */
  expression: string;
  /** Parsed to validate it now; it runs in a child stage. */
  inner: Instruction;
}

export interface StopsignalInstruction extends Base {
  kind: "stopsignal";
  signal: string;
}

export interface HealthcheckInstruction extends Base {
  kind: "healthcheck";
  /** `NONE` disables the base image's healthcheck. */
  test: { type: "none" } | { type: "cmd"; command: CommandLine };
  /** Durations in nanoseconds, as the image config stores them; absent means inherit the default. */
  interval?: number;
  timeout?: number;
  startPeriod?: number;
  startInterval?: number;
  retries?: number;
}

export type Instruction =
  | FromInstruction
  | RunInstruction
  | CmdInstruction
  | EntrypointInstruction
  | ShellInstruction
  | LabelInstruction
  | MaintainerInstruction
  | ExposeInstruction
  | EnvInstruction
  | CopyInstruction
  | VolumeInstruction
  | UserInstruction
  | WorkdirInstruction
  | ArgInstruction
  | OnbuildInstruction
  | StopsignalInstruction
  | HealthcheckInstruction;
