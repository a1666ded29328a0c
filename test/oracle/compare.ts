/**
 * The differential harness of test/oracle/: one Dockerfile and context built by tbuild and by
 * BuildKit (buildkit.ts), and what a user of the image could tell apart listed as differences.
 *
 * - The root filesystem, from each builder's `-o type=tar`: every path with its type, mode, numeric
 *   owner, content hash, symlink target, hard-link group and extended attributes. Times are not
 *   compared (BuildKit 0.8 has no SOURCE_DATE_EPOCH).
 * - The image config, tbuild's from its `-o type=docker` archive, BuildKit's as its daemon stores
 *   the image it loaded: the runtime fields a container starts with, and the history's
 *   `created_by` and `empty_layer`.
 *
 * One artifact of BuildKit 0.8 is known and set aside (KNOWN_ARTIFACTS); and, for cases that
 * are not reproducible by nature, the content of paths BuildKit's own second build changes
 * (oracle-setup.ts, judgeAgainstItself). Nothing else is.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { readTarEntries } from "../../oci/archive/tar-reader.js";
import { tbuildBin } from "../helpers/cli.js";
import type { BuildKitOracle } from "./buildkit.js";

/** One path of a root filesystem, as both builders' tar outputs can be compared. */
export interface RootfsEntry {
  type: string;
  mode: string;
  owner: string;
  /** Regular files: sha256 of the content. */
  sha256?: string;
  /** Symbolic links. */
  target?: string;
  /** Every path of a hard-link group (this one included), sorted; absent when the file has one name. */
  links?: string[];
  /** name=hex, sorted; absent when there are none. */
  xattrs?: string[];
  /**
   * The content of a small file, to show how two differ and for a kept rule to read (not
   * compared: sha256 is).
   */
  small?: string;
}

/** The config fields compared, and the history. */
export interface ConfigView {
  [field: string]: unknown;
}

export interface Built {
  rootfs: Map<string, RootfsEntry>;
  config: ConfigView;
  /** Paths BuildKit 0.8 may leave as mount stubs (KNOWN_ARTIFACTS). */
  mountPoints: string[];
  /** What the builder printed (tbuild's progress and warnings). */
  output?: string;
}

/**
 * The one artifact of BuildKit 0.8 set aside; nothing else is ignored. Its RUN containers' mount
 * points stay in the result as empty directories: `/dev`, `/proc` and `/sys` (in every result with
 * a RUN, even `FROM scratch` ones), and the target of each `RUN --mount`, with the parents it
 * made. BuildKit 0.10 removes them (its executor's mount stub cleaner), as tbuild never makes
 * them. Set aside only where tbuild's result has nothing, and only directories holding nothing
 * but more of them; and, seen by a later RUN step, as the lines of its listing that name them
 * (and its failure to mount a file on one: failedOnMountStub).
 */
export const KNOWN_ARTIFACTS = {
  paths: ["dev", "proc", "sys"],
  reason:
    "BuildKit 0.8 leaves the mount points of its RUN containers (/dev, /proc, /sys and each RUN --mount target) as empty directories in the result; BuildKit 0.10 and later remove them",
};

/** The absolute targets of the Dockerfile's `RUN --mount`s, as rootfs paths ("a/b"). */
export function mountTargets(dockerfile: string): string[] {
  const targets: string[] = [];
  for (const match of dockerfile.matchAll(/--mount=(\S+)/g)) {
    for (const option of match[1]!.split(",")) {
      const [key, value] = option.split("=", 2);
      if (["target", "dst", "destination"].includes(key!) && value?.startsWith("/"))
        targets.push(normalize(value));
    }
  }
  return targets;
}

/**
 * Whether BuildKit's failure is its mount stubs' doing (KNOWN_ARTIFACTS): a RUN mounting a file
 * where an earlier RUN's mount left a directory stub fails in runc ("not a directory"). Later
 * BuildKit removes the stub, and the mount works, as it does in tbuild.
 */
export function failedOnMountStub(error: string, dockerfile: string): boolean {
  const at = /error mounting "[^"]*" to rootfs at "([^"]+)"[^\n]*not a directory/.exec(error)?.[1];
  return at !== undefined && mountTargets(dockerfile).filter((t) => t === normalize(at)).length > 1;
}

/** The image config's runtime fields the comparison covers (as the issue lists them). */
const CONFIG_FIELDS = [
  "Env",
  "Cmd",
  "Entrypoint",
  "WorkingDir",
  "User",
  "ExposedPorts",
  "Volumes",
  "Labels",
  "StopSignal",
  "Healthcheck",
  "OnBuild",
  "Shell",
] as const;

/** A tar's entries as RootfsEntry by normalized path ("" never appears: the root itself is skipped). */
export async function rootfsOfTar(file: string): Promise<Map<string, RootfsEntry>> {
  const entries = new Map<string, RootfsEntry>();
  /** Hard links by the path they name. */
  const linkedTo = new Map<string, string>();
  for await (const entry of readTarEntries(createReadStream(file), { what: file })) {
    const name = normalize(entry.path);
    if (name === "") continue;
    const view: RootfsEntry = {
      type: entry.type,
      mode: (entry.mode & 0o7777).toString(8).padStart(4, "0"),
      owner: `${entry.uid}:${entry.gid}`,
    };
    if (entry.type === "File") {
      const hash = createHash("sha256");
      const chunks: Buffer[] = [];
      for await (const chunk of entry.body) {
        hash.update(chunk);
        if (entry.size <= SMALL_FILE) chunks.push(chunk);
      }
      view.sha256 = hash.digest("hex");
      if (entry.size <= SMALL_FILE) view.small = Buffer.concat(chunks).toString("utf8");
    } else if (entry.type === "SymbolicLink") {
      view.target = entry.linkpath;
    } else if (entry.type === "Link") {
      linkedTo.set(name, normalize(entry.linkpath));
    }
    if (entry.xattrs.size > 0) {
      view.xattrs = [...entry.xattrs].map(([k, v]) => `${k}=${v.toString("hex")}`).sort();
    }
    entries.set(name, view);
  }
  // A hard link is the file it names, with every name of the group listed on each member: which
  // name a writer stores as the file and which as links to it is the writer's walk order.
  const groups = new Map<string, string[]>();
  for (const [name, target] of linkedTo) {
    const group = groups.get(target) ?? [target];
    group.push(name);
    groups.set(target, group);
  }
  for (const [target, group] of groups) {
    const file = entries.get(target);
    if (!file) throw new Error(`the hard link ${group[1]} names ${target}, which is not before it`);
    const links = group.sort();
    for (const name of group) entries.set(name, { ...file, links });
  }
  return entries;
}

/**
 * Files up to this size are kept as text (`small`): a RUN step's record of what it saw (the
 * differential cases') can be a few KiB.
 */
const SMALL_FILE = 64 * 1024;

/** Contents up to this length are shown whole in a difference; longer ones by the lines that differ. */
const SHOWN_WHOLE = 2048;

function normalize(name: string): string {
  return name.replace(/^(\.\/|\/)+/, "").replace(/\/+$/, "");
}

/** The config of the one image in a docker archive (`docker save`, `-o type=docker`). */
export async function configOfDockerArchive(file: string): Promise<ConfigView> {
  const files = new Map<string, Buffer>();
  for await (const entry of readTarEntries(createReadStream(file), { what: file })) {
    if (entry.type !== "File") continue;
    const name = normalize(entry.path);
    if (name !== "manifest.json" && !name.endsWith(".json")) continue;
    const chunks: Buffer[] = [];
    for await (const chunk of entry.body) chunks.push(chunk);
    files.set(name, Buffer.concat(chunks));
  }
  const manifest = JSON.parse(String(files.get("manifest.json"))) as { Config: string }[];
  if (manifest.length !== 1) throw new Error(`${file} holds ${manifest.length} images, not one`);
  return configView(files.get(normalize(manifest[0]!.Config))!);
}

/** The compared fields of an image config (its JSON). */
export function configView(json: Buffer): ConfigView {
  const image = JSON.parse(String(json)) as {
    config?: Record<string, unknown>;
    history?: { created_by?: string; empty_layer?: boolean }[];
  };
  const view: ConfigView = {};
  for (const field of CONFIG_FIELDS) {
    const value = image.config?.[field];
    // An empty list or map and an absent field start the same container.
    if (value === undefined || value === null) continue;
    if (typeof value === "object" && Object.keys(value).length === 0) continue;
    if (value === "") continue;
    view[field] = value;
  }
  view.history = (image.history ?? []).map(
    (h) => `${h.created_by ?? ""}${h.empty_layer ? " (empty layer)" : ""}`,
  );
  return view;
}

export interface OracleCase {
  /** Names the case in test titles and differences. */
  name: string;
  /** The build context directory; its Dockerfile is `dockerfile` (relative to it, or absolute), default "Dockerfile". */
  context: string;
  dockerfile?: string;
  buildArgs?: string[];
  target?: string;
  labels?: Record<string, string>;
  noCache?: boolean;
  /** `--secret` values (`id=…,src=…`), given to both builders. */
  secrets?: string[];
}

/**
 * The Dockerfile as BuildKit 0.8 is given it: `# syntax=` lines dropped (no frontend image can be
 * pulled here; the embedded frontend builds the 1.2 syntax), written beside the work files.
 */
function dockerfileForBuildKit(source: string, work: string): string {
  const text = readFileSync(source, "utf8").replace(/^#\s*syntax\s*=.*\n/im, "");
  const file = path.join(work, "Dockerfile.buildkit");
  writeFileSync(file, text);
  return file;
}

/** The name a case's image is given (a reference: lower case). */
function imageName(c: OracleCase): string {
  return `oracle-${c.name.toLowerCase().replace(/[^a-z0-9._-]+/g, "-")}:latest`;
}

function buildFlags(c: OracleCase): string[] {
  return [
    ...(c.buildArgs ?? []).flatMap((a) => ["--build-arg", a]),
    ...(c.target ? ["--target", c.target] : []),
    ...Object.entries(c.labels ?? {}).flatMap(([k, v]) => ["--label", `${k}=${v}`]),
    ...(c.noCache ? ["--no-cache"] : []),
    ...(c.secrets ?? []).flatMap((secret) => ["--secret", secret]),
  ];
}

/** Builds the case with tbuild, in `store` (base images imported there), and reads both outputs. */
export async function buildWithTbuild(c: OracleCase, store: string, work: string): Promise<Built> {
  const rootfsTar = path.join(work, "ours-rootfs.tar");
  const image = path.join(work, "ours-image.tar");
  const result = spawnSync(
    tbuildBin,
    [
      "build",
      "--progress=plain",
      "-f",
      path.resolve(c.context, c.dockerfile ?? "Dockerfile"),
      ...buildFlags(c),
      "-o",
      `type=tar,dest=${rootfsTar}`,
      "-o",
      `type=docker,dest=${image},name=${imageName(c)}`,
      c.context,
    ],
    { env: { ...process.env, TBUILD_ROOT: store }, encoding: "utf8" },
  );
  if (result.status !== 0) throw new Error(`tbuild failed (${c.name}):\n${result.stderr}`);
  return {
    rootfs: await rootfsOfTar(rootfsTar),
    config: await configOfDockerArchive(image),
    mountPoints: [],
    output: result.stderr,
  };
}

/** Builds the case with BuildKit (base images imported into its daemon) and reads both outputs. */
export async function buildWithBuildKit(c: OracleCase, oracle: BuildKitOracle, work: string): Promise<Built> {
  const dockerfile = dockerfileForBuildKit(path.resolve(c.context, c.dockerfile ?? "Dockerfile"), work);
  const rootfsTar = path.join(work, "theirs-rootfs.tar");
  const tag = imageName(c);
  const flags = ["-f", dockerfile, ...buildFlags(c)];
  oracle.build([...flags, "-o", `type=tar,dest=${rootfsTar}`, c.context]);
  oracle.build([...flags, "-t", tag, c.context]);
  const config = configView(oracle.imageConfig(tag));
  oracle.docker(["rmi", tag]);
  const mountPoints = [...KNOWN_ARTIFACTS.paths, ...mountTargets(readFileSync(dockerfile, "utf8"))];
  return { rootfs: await rootfsOfTar(rootfsTar), config, mountPoints };
}

/**
 * One thing a user could tell apart: a path of the root filesystem (`/a/b`), a config field
 * (`config Env`), or a history entry (`history[3]`, each entry on its own when both histories are
 * as long; `history` whole otherwise). `ours` and `theirs` are absent where a result lacks it.
 */
export interface Difference {
  kind: "path" | "config" | "history";
  key: string;
  ours?: unknown;
  theirs?: unknown;
  text: string;
}

/**
 * A path both results have, alike but for its content (type, mode, owner, link target, hard links
 * and xattrs the same).
 */
export function contentOnly(d: Difference): boolean {
  if (d.kind !== "path" || d.ours === undefined || d.theirs === undefined) return false;
  const rest = ({ sha256: _sha, small: _small, ...entry }: RootfsEntry) => JSON.stringify(entry);
  return rest(d.ours as RootfsEntry) === rest(d.theirs as RootfsEntry);
}

/** What a user could tell apart between the two results; empty when they agree. */
export function differences(ours: Built, theirs: Built): Difference[] {
  const found: Difference[] = [];
  for (const [name, listed] of theirs.rootfs) {
    const mine = ours.rootfs.get(name);
    const entry = mine === undefined ? listed : withoutListedStubs(mine, listed, theirs.mountPoints);
    if (mine === undefined) {
      if (isMountStub(name, theirs, ours.rootfs)) continue;
      found.push({
        kind: "path",
        key: `/${name}`,
        theirs: entry,
        text: `/${name}: only BuildKit's result has it (${describe(entry)})`,
      });
    } else if (describe(mine) !== describe(entry)) {
      const contents =
        mine.sha256 !== entry.sha256 && mine.small !== undefined && entry.small !== undefined
          ? ` (${contentDifference(mine.small, entry.small)})`
          : "";
      found.push({
        kind: "path",
        key: `/${name}`,
        ours: mine,
        theirs: entry,
        text: `/${name}: tbuild ${describe(mine)}; BuildKit ${describe(entry)}${contents}`,
      });
    }
  }
  for (const [name, entry] of ours.rootfs) {
    if (!theirs.rootfs.has(name)) {
      found.push({
        kind: "path",
        key: `/${name}`,
        ours: entry,
        text: `/${name}: only tbuild's result has it (${describe(entry)})`,
      });
    }
  }
  const fields = new Set([...Object.keys(ours.config), ...Object.keys(theirs.config)]);
  fields.delete("history");
  for (const field of [...fields].sort()) {
    const a = JSON.stringify(ours.config[field]);
    const b = JSON.stringify(theirs.config[field]);
    if (a !== b) {
      found.push({
        kind: "config",
        key: `config ${field}`,
        ours: ours.config[field],
        theirs: theirs.config[field],
        text: `config ${field}: tbuild ${a ?? "(none)"}; BuildKit ${b ?? "(none)"}`,
      });
    }
  }
  const [mine, others] = [ours.config.history as string[], theirs.config.history as string[]];
  if (mine.length !== others.length) {
    found.push({
      kind: "history",
      key: "history",
      ours: mine,
      theirs: others,
      text: `history: tbuild ${JSON.stringify(mine)}; BuildKit ${JSON.stringify(others)}`,
    });
  } else {
    mine.forEach((entry, i) => {
      if (entry !== others[i]) {
        found.push({
          kind: "history",
          key: `history[${i}]`,
          ours: entry,
          theirs: others[i],
          text: `history[${i}]: tbuild ${JSON.stringify(entry)}; BuildKit ${JSON.stringify(others[i])}`,
        });
      }
    });
  }
  return found;
}

/**
 * BuildKit's file without the lines naming mount stubs (KNOWN_ARTIFACTS) that tbuild's lacks: a
 * RUN step's listing of what it saw (`stat -c '%n %F %a %u:%g'`, as the differential cases write)
 * shows the stubs an earlier RUN left. The same entry when there are none (its content hash
 * then stays BuildKit's: the content is compared as text).
 */
function withoutListedStubs(ours: RootfsEntry, theirs: RootfsEntry, mountPoints: string[]): RootfsEntry {
  if (ours.small === undefined || theirs.small === undefined || ours.sha256 === theirs.sha256) return theirs;
  const isStub = (line: string) => {
    const dir = /^\/(\S+) directory [0-7]+ \d+:\d+$/.exec(line)?.[1];
    return dir !== undefined && mountPoints.some((point) => point === dir || point.startsWith(`${dir}/`));
  };
  const mine = new Set(ours.small.split("\n"));
  const small = theirs.small
    .split("\n")
    .filter((line) => mine.has(line) || !isStub(line))
    .join("\n");
  if (small === theirs.small) return theirs;
  return { ...theirs, small, ...(small === ours.small ? { sha256: ours.sha256 } : {}) };
}

/** How two contents differ: both whole when they are short, else the lines only one has. */
function contentDifference(ours: string, theirs: string): string {
  if (ours.length <= SHOWN_WHOLE && theirs.length <= SHOWN_WHOLE)
    return `tbuild's content ${JSON.stringify(ours)}, BuildKit's ${JSON.stringify(theirs)}`;
  const [mine, others] = [new Set(ours.split("\n")), new Set(theirs.split("\n"))];
  const onlyIn = (a: Set<string>, b: Set<string>) => JSON.stringify([...a].filter((line) => !b.has(line)));
  return `lines only tbuild's content has ${onlyIn(mine, others)}, only BuildKit's ${onlyIn(others, mine)}`;
}

/**
 * Whether BuildKit's `name` is a mount stub (KNOWN_ARTIFACTS): a directory only BuildKit's result
 * has, that is a mount point or a parent of one, and holds nothing but more stubs.
 */
function isMountStub(name: string, theirs: Built, ours: Map<string, RootfsEntry>): boolean {
  if (ours.has(name) || theirs.rootfs.get(name)?.type !== "Directory") return false;
  if (!theirs.mountPoints.some((point) => point === name || point.startsWith(`${name}/`))) return false;
  for (const other of theirs.rootfs.keys()) {
    if (other.startsWith(`${name}/`) && !isMountStub(other, theirs, ours)) return false;
  }
  return true;
}

function describe(entry: RootfsEntry): string {
  const parts = [entry.type, entry.mode, entry.owner];
  if (entry.sha256) parts.push(`sha256:${entry.sha256.slice(0, 12)}`);
  if (entry.target !== undefined) parts.push(`-> ${entry.target}`);
  if (entry.links) parts.push(`links ${entry.links.join(",")}`);
  if (entry.xattrs) parts.push(`xattrs ${entry.xattrs.join(",")}`);
  return parts.join(" ");
}

/** A work directory for one case's outputs, removed by the caller. */
export function caseWork(parent: string, name: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(parent, `${name.replace(/[^A-Za-z0-9._-]+/g, "-")}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
