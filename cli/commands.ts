import type { CommandSpec, FlagSpec } from "./spec.js";

const graphFlags: FlagSpec[] = [
  {
    name: "file",
    short: "f",
    type: "string",
    value: "FILE",
    description: "Dockerfile to read",
    default: "CONTEXT/Dockerfile",
  },
  {
    name: "build-arg",
    type: "string",
    multiple: true,
    value: "K=V",
    description: "set a build-time variable",
  },
  {
    name: "target",
    type: "string",
    value: "STAGE",
    description: "build up to this stage",
    default: "the last stage",
  },
  {
    name: "platform",
    type: "string",
    value: "PLATFORM",
    description: "target platform, e.g. linux/amd64",
    default: "this machine's",
  },
];

/** Every command tbuild knows, in the order `tbuild --help` lists them. */
export const commands: CommandSpec[] = [
  {
    name: "debug parse",
    summary: "print a Dockerfile's syntax tree in BuildKit's dumper format",
    operands: "FILE",
    flags: [],
    load: () => import("./commands/debug-parse.js"),
  },
  {
    name: "debug graph",
    summary: "print the build graph and final image config of a build, running nothing",
    operands: "CONTEXT",
    flags: [
      ...graphFlags,
      { name: "format", type: "string", value: "json|dot", description: "output format", default: "json" },
    ],
    load: () => import("./commands/debug-graph.js"),
  },
  {
    name: "version",
    summary: "print the versions of tbuild and Node",
    operands: "",
    flags: [],
    load: () => import("./commands/version.js"),
  },
];

export function findCommand(words: string[]): { spec: CommandSpec; consumed: number } | undefined {
  for (const spec of commands) {
    const nameWords = spec.name.split(" ");
    if (nameWords.every((w, i) => words[i] === w)) return { spec, consumed: nameWords.length };
  }
  return undefined;
}
