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
    name: "pull",
    summary: "fetch an image from a registry into the local store",
    operands: "REF",
    flags: [
      {
        name: "platform",
        type: "string",
        value: "PLATFORM",
        description: "platform to pick from a multi-platform image, e.g. linux/arm64",
        default: "this machine's",
      },
    ],
    load: () => import("./commands/pull.js"),
  },
  {
    name: "push",
    summary: "send an image from the local store to a registry",
    operands: "REF",
    flags: [],
    load: () => import("./commands/push.js"),
  },
  {
    name: "login",
    summary: "check and save credentials for a registry (in docker's config.json)",
    operands: "[REGISTRY]",
    flags: [
      { name: "username", short: "u", type: "string", value: "USER", description: "user name" },
      {
        name: "password",
        short: "p",
        type: "string",
        value: "PASSWORD",
        description: "password (visible to other users; prefer --password-stdin)",
      },
      { name: "password-stdin", type: "boolean", description: "read the password from standard input" },
    ],
    load: () => import("./commands/login.js"),
  },
  {
    name: "logout",
    summary: "forget the saved credentials for a registry",
    operands: "[REGISTRY]",
    flags: [],
    load: () => import("./commands/logout.js"),
  },
  {
    name: "images",
    summary: "list the images in the local store",
    operands: "",
    flags: [
      { name: "format", type: "string", value: "table|json", description: "output format", default: "table" },
    ],
    load: () => import("./commands/images.js"),
  },
  {
    name: "tag",
    summary: "give a local image another name",
    operands: "SOURCE TARGET",
    flags: [],
    load: () => import("./commands/tag.js"),
  },
  {
    name: "rmi",
    summary: "remove image names from the local store, then the blobs no image needs",
    operands: "IMAGE...",
    flags: [
      {
        name: "force",
        short: "f",
        type: "boolean",
        description: "remove every name of an image given by ID",
      },
      { name: "no-prune", type: "boolean", description: "keep the blobs no image needs any more" },
    ],
    load: () => import("./commands/rmi.js"),
  },
  {
    name: "inspect",
    summary: "print a local image's descriptor, manifest and config as JSON",
    operands: "IMAGE",
    flags: [
      {
        name: "platform",
        type: "string",
        value: "PLATFORM",
        description: "platform to show of a multi-platform image",
        default: "this machine's",
      },
    ],
    load: () => import("./commands/inspect.js"),
  },
  {
    name: "save",
    summary: "write local images to a tar archive (OCI layout or docker save format)",
    operands: "IMAGE...",
    flags: [
      {
        name: "output",
        short: "o",
        type: "string",
        value: "FILE",
        description: "archive to write",
        default: "standard output",
      },
      { name: "format", type: "string", value: "oci|docker", description: "archive format", default: "oci" },
      {
        name: "platform",
        type: "string",
        value: "PLATFORM",
        description: "platform to save of a multi-platform image",
        default: "all held (oci), this machine's (docker)",
      },
    ],
    load: () => import("./commands/save.js"),
  },
  {
    name: "load",
    summary: "read images from a tar archive (OCI or docker) into the local store",
    operands: "",
    flags: [
      {
        name: "input",
        short: "i",
        type: "string",
        value: "FILE",
        description: "archive to read",
        default: "standard input",
      },
      {
        name: "name",
        type: "string",
        value: "NAME",
        description: "name the archive's image (for archives that name none)",
      },
    ],
    load: () => import("./commands/load.js"),
  },
  {
    name: "import",
    summary: "make a one-layer image from a root filesystem (a tar, tar.gz or directory)",
    operands: "FILE|DIR|- REF",
    flags: [
      {
        name: "change",
        short: "c",
        type: "string",
        multiple: true,
        value: "INSTRUCTION",
        description:
          "apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)",
      },
      {
        name: "message",
        short: "m",
        type: "string",
        value: "TEXT",
        description: "history comment",
        default: "Imported from FILE",
      },
      {
        name: "platform",
        type: "string",
        value: "PLATFORM",
        description: "platform the image is for",
        default: "this machine's",
      },
    ],
    load: () => import("./commands/import.js"),
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
