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
  {
    name: "network",
    type: "string",
    values: ["default", "none", "host"],
    description:
      "network of each RUN without its own --network: default and host share the host's, none is loopback only",
    default: "default",
  },
];

/** Every flag of `tbuild build`; `debug graph` takes them all, so a build's command line plans the same. */
const BUILD_FLAGS: FlagSpec[] = [
  ...graphFlags,
  {
    name: "tag",
    short: "t",
    type: "string",
    multiple: true,
    value: "NAME[:TAG]",
    description: "name the image in the local store",
  },
  {
    name: "output",
    short: "o",
    type: "string",
    multiple: true,
    value: "SPEC",
    description:
      "export: type=oci|docker|tar|local|image,dest=PATH,name=REF,push=true,compression=gzip|zstd|uncompressed",
    default: "the local store, under the -t names",
  },
  { name: "push", type: "boolean", description: "push the -t names to their registries" },
  {
    name: "provenance",
    type: "string",
    bare: "true",
    value: "true|false|mode=min|max[,version=v1|v0.2]",
    description: "attach SLSA provenance to the image (--provenance alone: mode=min)",
    default: "mode=min for a pushed image, else none",
  },
  {
    name: "sbom",
    type: "string",
    bare: "true",
    value: "true|false",
    description: "attach an SBOM to the image (not supported yet)",
  },
  {
    name: "attest",
    type: "string",
    multiple: true,
    value: "type=provenance|sbom,...",
    description: "an attestation to attach: type=provenance,mode=max,version=v0.2; type=sbom",
  },
  { name: "pull", type: "boolean", description: "always ask the registry for base images" },
  { name: "no-cache", type: "boolean", description: "run every step, reusing nothing" },
  {
    name: "no-cache-filter",
    type: "string",
    multiple: true,
    value: "STAGE",
    description: "run this stage's steps without the cache",
  },
  {
    name: "secret",
    type: "string",
    multiple: true,
    value: "id=ID,src=PATH|env=VAR",
    description: "a secret for RUN --mount=type=secret",
  },
  {
    name: "ssh",
    type: "string",
    multiple: true,
    value: "default|ID=SOCKET",
    description: "an ssh agent for RUN --mount=type=ssh",
  },
  {
    name: "label",
    type: "string",
    multiple: true,
    value: "K=V",
    description: "add a label to the image",
  },
  { name: "iidfile", type: "string", value: "FILE", description: "write the image digest to FILE" },
  {
    name: "metadata-file",
    type: "string",
    value: "FILE",
    description: "write build metadata (digests, names) as JSON to FILE",
  },
  {
    name: "progress",
    type: "string",
    values: ["auto", "tty", "plain", "rawjson", "quiet"],
    description: "how progress is shown (auto: tty on a terminal, else plain)",
    default: "$TBUILD_PROGRESS, else auto",
  },
  { name: "quiet", short: "q", type: "boolean", description: "print only the image digest" },
  {
    name: "jobs",
    type: "string",
    value: "N",
    description: "steps run at once",
    default: "the CPU count, or [build] jobs in config.toml",
  },
  {
    name: "step-timeout",
    type: "string",
    value: "DURATION",
    description: "kill a RUN step still running after DURATION (30s, 5m, 1h) and fail the build",
    default: "no limit",
  },
  {
    name: "cache-from",
    type: "string",
    multiple: true,
    value: "SPEC",
    description:
      "import build cache: type=registry,ref=R | type=local,src=DIR | an image REF with inline cache",
  },
  {
    name: "cache-to",
    type: "string",
    value: "SPEC",
    description: "export build cache: type=registry,ref=R|type=local,dest=DIR[,mode=min|max] | type=inline",
  },
  {
    name: "build-context",
    type: "string",
    multiple: true,
    value: "NAME=SRC",
    description:
      "replace a stage or image by name: NAME=DIR, NAME=docker-image://REF, NAME=oci-layout://DIR[:TAG]",
  },
  {
    name: "explain",
    type: "boolean",
    description:
      "say why each step missed the cache: which file, build arg, base image or instruction changed",
  },
  {
    name: "worker",
    type: "string",
    value: "NAME|pool:NAME|ssh://USER@HOST|cmd://COMMAND",
    description:
      "build on a remote worker: `tbuild worker --stdio` started over SSH (or by the command), a [worker.NAME] of config.toml, or the best worker of a [pool.NAME]; also $TBUILD_WORKER",
  },
];

/** `--format table|json`, of the commands that list things. */
const TABLE_OR_JSON: FlagSpec = {
  name: "format",
  type: "string",
  values: ["table", "json"],
  description: "output format",
  default: "table",
};

/** Every command tbuild knows, in the order `tbuild --help` lists them. */
/** `-e` and `--env-file`, of `run` and `exec`: the process's variables. */
const ENV_FLAGS: FlagSpec[] = [
  {
    name: "env",
    short: "e",
    type: "string",
    multiple: true,
    value: "K=V",
    description: "set an environment variable (K alone takes this shell's value)",
  },
  {
    name: "env-file",
    type: "string",
    multiple: true,
    value: "FILE",
    description: "read environment variables from a file of K=V lines",
  },
];

/** `-i` and `-t`, of `run` and `exec`. */
const STDIO_FLAGS: FlagSpec[] = [
  {
    name: "interactive",
    short: "i",
    type: "boolean",
    description: "keep standard input open to the process",
  },
  { name: "tty", short: "t", type: "boolean", description: "give the process a terminal" },
];

/** `-t SECONDS` of `stop` and `restart`. */
const STOP_TIME_FLAG: FlagSpec = {
  name: "time",
  short: "t",
  type: "string",
  value: "SECONDS",
  description: "seconds to wait before SIGKILL",
  default: "the container's --stop-timeout, else 10",
};

export const commands: CommandSpec[] = [
  {
    name: "build",
    summary: "build an image from a Dockerfile",
    operands: "CONTEXT",
    flags: BUILD_FLAGS,
    load: () => import("./commands/build.js"),
  },
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
    details: [
      "Takes every flag of tbuild build, and prints the graph that build would solve; base images come from the local store only.",
    ],
    flags: [
      ...BUILD_FLAGS,
      {
        name: "format",
        type: "string",
        values: ["json", "dot"],
        description: "output format",
        default: "json",
      },
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
    details: ["REGISTRY is docker.io when absent. Logins are shared with docker, podman and skopeo."],
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
    flags: [TABLE_OR_JSON],
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
      {
        name: "provenance",
        type: "boolean",
        description:
          "print the image's SLSA provenance statements by platform (from the store, else from its registry)",
      },
      {
        name: "sbom",
        type: "boolean",
        description:
          "print the image's SBOM statements (SPDX) by platform (from the store, else from its registry)",
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
      {
        name: "format",
        type: "string",
        values: ["oci", "docker"],
        description: "archive format",
        default: "oci",
      },
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
          "apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)",
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
    name: "run",
    summary: "run a command in a new container from an image",
    operands: "IMAGE [COMMAND [ARG...]]",
    flagsEndAtFirstOperand: true,
    flags: [
      {
        name: "rm",
        type: "boolean",
        description: "remove the container (and its anonymous volumes) when it exits",
      },
      {
        name: "name",
        type: "string",
        value: "NAME",
        description: "name the container",
        default: "a random name",
      },
      ...ENV_FLAGS,
      {
        name: "volume",
        short: "v",
        type: "string",
        multiple: true,
        value: "SRC:DST[:ro]",
        description: "bind mount a host path, or mount a named volume (NAME:DST), or an anonymous one (DST)",
      },
      {
        name: "workdir",
        short: "w",
        type: "string",
        value: "DIR",
        description: "working directory in the container",
        default: "the image's WORKDIR",
      },
      {
        name: "user",
        short: "u",
        type: "string",
        value: "USER[:GROUP]",
        description: "user (name or id) to run as",
        default: "the image's USER",
      },
      {
        name: "entrypoint",
        type: "string",
        value: "CMD",
        description: 'replace the image\'s ENTRYPOINT (and drop its CMD); "" clears it',
      },
      {
        name: "network",
        type: "string",
        values: ["host", "none", "private", "bridge"],
        description:
          "network: the host's, none (loopback only), or private (its own; -p and -P imply it; bridge is an alias)",
        default: "host",
      },
      {
        name: "publish",
        short: "p",
        type: "string",
        multiple: true,
        value: "[IP:][HOST:]CTR[/tcp|udp]",
        description: "forward a host port (a free one without HOST) to a container port",
      },
      {
        name: "publish-all",
        short: "P",
        type: "boolean",
        description: "forward a free host port to each port the image EXPOSEs",
      },
      {
        name: "hostname",
        type: "string",
        value: "NAME",
        description: "the container's host name",
        default: "the first 12 characters of its ID",
      },
      {
        name: "dns",
        type: "string",
        multiple: true,
        value: "IP",
        description: "a nameserver for a private network's /etc/resolv.conf",
      },
      {
        name: "add-host",
        type: "string",
        multiple: true,
        value: "NAME:IP",
        description: "add a line to /etc/hosts (IP may be host-gateway: this host)",
      },
      ...STDIO_FLAGS,
      {
        name: "detach",
        short: "d",
        type: "boolean",
        description: "run the container in the background and print its ID (its output: tbuild logs)",
      },
      {
        name: "restart",
        type: "string",
        values: ["no"],
        description: "restart policy: only no (there is no daemon to restart a container)",
        default: "no",
      },
      {
        name: "stop-signal",
        type: "string",
        value: "SIGNAL",
        description: "signal that stops the container (stop, and SIGTERM to tbuild run)",
        default: "the image's STOPSIGNAL, else SIGTERM",
      },
      {
        name: "stop-timeout",
        type: "string",
        value: "SECONDS",
        description: "seconds to wait after the stop signal before SIGKILL (-1: no SIGKILL)",
        default: "10",
      },
      {
        name: "init",
        type: "boolean",
        description: "run a tiny init (tini) as PID 1: it passes signals on to the process and reaps zombies",
      },
      {
        name: "log-opt",
        type: "string",
        multiple: true,
        value: "max-size=SIZE|max-file=N",
        description: "cap the log of a detached container (rotated parts of SIZE, N kept)",
        default: "max-size=10m, max-file=3",
      },
      {
        name: "platform",
        type: "string",
        value: "PLATFORM",
        description: "platform of the image to run, e.g. linux/arm64",
        default: "this machine's",
      },
    ],
    load: () => import("./commands/run.js"),
  },
  {
    name: "exec",
    summary: "run a command in a running container",
    operands: "CONTAINER COMMAND [ARG...]",
    flagsEndAtFirstOperand: true,
    flags: [
      ...STDIO_FLAGS,
      {
        name: "user",
        short: "u",
        type: "string",
        value: "USER[:GROUP]",
        description: "user (name or id) to run as",
        default: "the container's user",
      },
      {
        name: "workdir",
        short: "w",
        type: "string",
        value: "DIR",
        description: "working directory in the container",
        default: "the container's",
      },
      ...ENV_FLAGS,
    ],
    load: () => import("./commands/exec.js"),
  },
  {
    name: "stop",
    summary: "stop running containers: the stop signal, then SIGKILL after a grace period",
    operands: "CONTAINER...",
    flags: [STOP_TIME_FLAG],
    load: () => import("./commands/stop.js"),
  },
  {
    name: "start",
    summary: "start stopped containers again, in the background",
    operands: "CONTAINER...",
    flags: [],
    load: () => import("./commands/start.js"),
  },
  {
    name: "restart",
    summary: "stop containers (when running), then start them again",
    operands: "CONTAINER...",
    flags: [STOP_TIME_FLAG],
    load: () => import("./commands/restart.js"),
  },
  {
    name: "kill",
    summary: "send a signal to running containers' main process",
    operands: "CONTAINER...",
    flags: [
      {
        name: "signal",
        short: "s",
        type: "string",
        value: "SIGNAL",
        description: "the signal, by name or number",
        default: "SIGKILL",
      },
    ],
    load: () => import("./commands/kill.js"),
  },
  {
    name: "wait",
    summary: "wait for containers to stop, and print their exit codes",
    operands: "CONTAINER...",
    flags: [],
    load: () => import("./commands/wait.js"),
  },
  {
    name: "ps",
    summary: "list the containers kept in the store",
    operands: "",
    flags: [
      { name: "all", short: "a", type: "boolean", description: "list stopped containers too" },
      { name: "quiet", short: "q", type: "boolean", description: "print the container IDs only" },
      {
        name: "filter",
        short: "f",
        type: "string",
        multiple: true,
        value: "status=S|name=N|id=I",
        description:
          "only containers of this status (created, running, exited), name (containing N) or ID (starting with I); one key's values are OR-ed",
      },
      { name: "no-trunc", type: "boolean", description: "show whole IDs and commands" },
      {
        name: "format",
        type: "string",
        values: ["table", "json"],
        description: "output format",
        default: "table",
      },
    ],
    load: () => import("./commands/ps.js"),
  },
  {
    name: "logs",
    summary: "show the output of a container started with run -d",
    operands: "CONTAINER",
    flags: [
      {
        name: "follow",
        short: "f",
        type: "boolean",
        description: "go on showing new output until the container stops",
      },
      {
        name: "tail",
        short: "n",
        type: "string",
        value: "N|all",
        description: "show the last N lines only",
        default: "all",
      },
      { name: "timestamps", short: "t", type: "boolean", description: "prefix each line with its time" },
      {
        name: "since",
        type: "string",
        value: "TIME",
        description: "only output since an RFC 3339 time, a Unix time, or a duration before now (10m)",
      },
    ],
    load: () => import("./commands/logs.js"),
  },
  {
    name: "rm",
    summary: "remove kept containers and their writable layers",
    operands: "CONTAINER...",
    flags: [
      { name: "force", short: "f", type: "boolean", description: "kill a running container first" },
      {
        name: "volumes",
        short: "v",
        type: "boolean",
        description: "remove the container's anonymous volumes too (named ones always stay)",
      },
    ],
    load: () => import("./commands/rm.js"),
  },
  {
    name: "container prune",
    summary: "remove every stopped container, as rm does (their volumes stay)",
    operands: "",
    flags: [{ name: "force", short: "f", type: "boolean", description: "do not ask (tbuild never asks)" }],
    load: () => import("./commands/container-prune.js"),
  },
  {
    name: "volume create",
    summary: "create a volume (a random name when none is given)",
    operands: "[NAME]",
    flags: [
      {
        name: "label",
        type: "string",
        multiple: true,
        value: "K=V",
        description: "set a label on the volume",
      },
    ],
    load: () => import("./commands/volume-create.js"),
  },
  {
    name: "volume ls",
    summary: "list the volumes kept in the store",
    operands: "",
    flags: [
      { name: "quiet", short: "q", type: "boolean", description: "print only the volume names" },
      {
        name: "filter",
        short: "f",
        type: "string",
        multiple: true,
        value: "dangling=true|false",
        description: "only volumes no container uses (true), or that one does (false)",
      },
      TABLE_OR_JSON,
    ],
    load: () => import("./commands/volume-ls.js"),
  },
  {
    name: "volume inspect",
    summary: "print volumes' details as a JSON array, as docker does",
    operands: "VOLUME...",
    flags: [],
    load: () => import("./commands/volume-inspect.js"),
  },
  {
    name: "volume rm",
    summary: "remove volumes no container uses",
    operands: "VOLUME...",
    flags: [
      { name: "force", short: "f", type: "boolean", description: "say nothing of volumes that do not exist" },
    ],
    load: () => import("./commands/volume-rm.js"),
  },
  {
    name: "volume prune",
    summary: "remove the anonymous volumes no container uses",
    operands: "",
    flags: [
      {
        name: "all",
        short: "a",
        type: "boolean",
        description: "remove every volume no container uses, named ones too",
      },
      { name: "force", short: "f", type: "boolean", description: "do not ask (tbuild never asks)" },
    ],
    load: () => import("./commands/volume-prune.js"),
  },
  {
    name: "commit",
    summary: "make an image of a container's changes, on top of its image",
    operands: "CONTAINER IMAGE",
    flags: [
      {
        name: "change",
        short: "c",
        type: "string",
        multiple: true,
        value: "INSTRUCTION",
        description:
          "apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)",
      },
      { name: "message", short: "m", type: "string", value: "TEXT", description: "history comment" },
      { name: "author", short: "a", type: "string", value: "NAME", description: "the image's author" },
    ],
    load: () => import("./commands/commit.js"),
  },
  {
    name: "du",
    summary: "show the space images, the build cache, cache mounts, snapshots and containers use",
    operands: "",
    flags: [TABLE_OR_JSON],
    load: () => import("./commands/du.js"),
  },
  {
    name: "cache mounts",
    summary: "list the store's cache mounts (RUN --mount=type=cache): id, size, last use, sharing",
    operands: "",
    flags: [
      { name: "quiet", short: "q", type: "boolean", description: "print only the mounts' keys" },
      TABLE_OR_JSON,
    ],
    load: () => import("./commands/cache-mounts.js"),
  },
  {
    name: "cache export",
    summary: "write cache mounts to a directory or an archive, owners and modes kept, for cache import",
    operands: "",
    flags: [
      {
        name: "id",
        type: "string",
        multiple: true,
        value: "ID",
        description: "the mount of this id (or key prefix, as cache mounts shows it)",
      },
      { name: "all", type: "boolean", description: "every cache mount of the store" },
      {
        name: "output",
        short: "o",
        type: "string",
        value: "DIR|FILE.tar[.zst|.gz]|-",
        description: "where: a directory, an archive (compressed as its name says), or - for a tar on stdout",
      },
    ],
    load: () => import("./commands/cache-export.js"),
  },
  {
    name: "cache import",
    summary: "seed the store's cache mounts from what cache export wrote (mounts the store has are kept)",
    operands: "",
    flags: [
      {
        name: "input",
        short: "i",
        type: "string",
        value: "DIR|FILE|-",
        description:
          "a directory or an archive (.tar, .tar.zst, .tar.gz; - for one on stdin) written by cache export",
      },
    ],
    load: () => import("./commands/cache-import.js"),
  },
  {
    name: "prune",
    summary:
      "remove build cache no image needs, least recently used first, with the unpacked layers only it needed",
    operands: "",
    flags: [
      {
        name: "all",
        short: "a",
        type: "boolean",
        description: "also remove cache mounts and every unpacked snapshot",
      },
      {
        name: "keep-storage",
        type: "string",
        value: "SIZE",
        description:
          "stop once the build cache (with type=cache-mount: the cache mounts) is at most SIZE (e.g. 10GB)",
      },
      {
        name: "filter",
        type: "string",
        multiple: true,
        value: "until=DURATION|type=cache-mount",
        description:
          "until: only what was unused for longer than DURATION (e.g. 24h); type=cache-mount: only cache mounts, least recently used first",
      },
      { name: "force", short: "f", type: "boolean", description: "do not ask (tbuild never asks)" },
    ],
    load: () => import("./commands/prune.js"),
  },
  {
    name: "completion",
    summary: "print a shell completion script for bash, zsh or fish",
    operands: "SHELL",
    operandValues: ["bash", "zsh", "fish"],
    details: [
      "Load it in every new shell:\n" +
        "  bash:  source <(tbuild completion bash)   # in ~/.bashrc\n" +
        '  zsh:   tbuild completion zsh > "${fpath[1]}/_tbuild"\n' +
        "  fish:  tbuild completion fish > ~/.config/fish/completions/tbuild.fish",
    ],
    flags: [],
    load: () => import("./commands/completion.js"),
  },
  // Before `worker`: findCommand takes the first command whose words begin the command line.
  {
    name: "worker ls",
    summary:
      "list the remote workers of config.toml: reachable, version, platforms, running builds, cache size",
    operands: "",
    details: [
      "Each [worker.NAME] of config.toml is asked at once, within its timeout; one that cannot be reached says why. docs/workers.md describes the tables.",
    ],
    flags: [TABLE_OR_JSON],
    load: () => import("./commands/worker-ls.js"),
  },
  {
    name: "worker",
    summary: "serve builds of a remote client on standard input and output (what --worker ssh://HOST starts)",
    operands: "",
    details: [
      "Started per connection by the client (over SSH, or any command for cmd://), never by hand: it speaks tbuild's worker protocol (docs/worker-protocol.md) until the client closes the connection, and writes messages to standard error only.",
    ],
    flags: [
      {
        name: "stdio",
        type: "boolean",
        description: "speak the worker protocol on standard input and output",
      },
    ],
    load: () => import("./commands/worker.js"),
  },
  {
    name: "version",
    summary: "print the versions of tbuild (and the git commit it was built from), Node and runc",
    operands: "",
    details: [
      "With --platforms, instead: one line per platform saying how its RUN steps run on this host: native, through the kernel's binfmt_misc emulator, through qemu-ARCH-static mounted into the step, or no (docs/platforms.md).",
    ],
    flags: [
      {
        name: "platforms",
        type: "boolean",
        description:
          "list the platforms this host runs RUN steps of, and how (found by running a test binary of each)",
      },
    ],
    load: () => import("./commands/version.js"),
  },
];

/**
 * Commands tbuild starts itself and no one types: found by findCommand, absent from help and
 * completion. `__library-call` (LIBRARY_CALL_COMMAND in api/rootless.ts) serves the library's
 * build() or run() for an unprivileged caller, inside the user namespace.
 */
const internalCommands: CommandSpec[] = [
  {
    name: "__library-call",
    summary: "serve one call of the library, inside tbuild's user namespace",
    operands: "",
    flags: [],
    load: () => import("./commands/library-call.js"),
  },
];

export function findCommand(words: string[]): { spec: CommandSpec; consumed: number } | undefined {
  for (const spec of [...commands, ...internalCommands]) {
    const nameWords = spec.name.split(" ");
    if (nameWords.every((w, i) => words[i] === w)) return { spec, consumed: nameWords.length };
  }
  return undefined;
}
