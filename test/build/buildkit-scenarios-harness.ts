/**
 * The machinery of the BuildKit conformance suite (buildkit-scenarios.test.ts): reads the scenario
 * fixtures ported from moby/buildkit's Dockerfile integration tests
 * (test/fixtures/buildkit-scenarios/*.yaml, described in that folder's README), lays out each
 * scenario's context, runs `bin/tbuild build` on it as a user would, and checks what the Go test
 * checked: files of the exported result, the image config and history, or the build's error.
 *
 * Fixtures are data only. A scenario is one build or a sequence of builds (`steps`) in one store;
 * the expectations of a step may refer to an earlier step's result (`sameAs`, `differsFrom`).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { chmod, chown, cp, link, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { gzipSync } from "node:zlib";
import * as tar from "tar";
import { parse as parseYaml } from "yaml";
import { tbuildBin } from "../helpers/cli.js";
import { busyboxRootfs } from "../helpers/images.js";

// ---------------------------------------------------------------------------------------------
// The fixture format

/** A context entry: a string is a regular file (mode 0600, as the Go tests' fstest.CreateFile). */
export type ContextEntry =
  | string
  | null
  | {
      content?: string;
      /** A file of this many zero bytes. */
      zeros?: number;
      mode?: string;
      dir?: boolean;
      symlink?: string;
      socket?: boolean;
      /** A tar archive made of these entries (gzip-compressed with `gzip: true`). */
      tar?: TarEntry[];
      gzip?: boolean;
      /** mtime in seconds since 1970. */
      mtime?: number;
    };

export interface TarEntry {
  name: string;
  type?: "file" | "dir" | "symlink" | "hardlink";
  content?: string;
  mode?: string;
  linkname?: string;
  mtime?: number;
}

export type FileExpectation =
  | string
  | {
      content?: string;
      contains?: string;
      notContains?: string;
      /** The content as a regular expression. */
      matches?: string;
      minLength?: number;
      exists?: boolean;
      absent?: boolean;
      type?: "file" | "dir" | "symlink";
      symlink?: string;
      mode?: string;
      uid?: number;
      gid?: number;
      /** Same content as this file in the result of step N. */
      sameAs?: number;
      differsFrom?: number;
      /** The same inode (a hard link) as this other path of the result. */
      sameFileAs?: string;
      /** The same bytes as this file of the build context, or as this HTTP resource. */
      sameAsContext?: string;
      sameAsHttp?: string;
      /** The modification time, in seconds since 1970. */
      mtime?: number;
    };

export interface HistoryExpectation {
  /** A base image whose history the image starts with (entries are counted after it). */
  base?: string;
  count?: number;
  added?: number;
  entries?: {
    index: number;
    createdByContains?: string;
    createdByNotContains?: string;
    emptyLayer?: boolean;
    created?: boolean;
  }[];
}

export interface Expectation {
  success?: boolean;
  /** The build fails; a string must appear in its error output. */
  error?: string | boolean;
  errorMatches?: string;
  /** The error points at these lines of the Dockerfile (`Dockerfile:LINE` in its output). */
  errorLines?: number[];
  /** Lines the build's output (progress and errors) must or must not hold. */
  logContains?: string[];
  logNotContains?: string[];
  files?: Record<string, FileExpectation>;
  /** Directories of the result that must exist and be empty. */
  emptyDirs?: string[];
  /** Entries of a `-o type=tar` export: content, uid, gid, mode. */
  tarFiles?: Record<string, FileExpectation>;
  /** Image config fields (`config.*`), each equal to the value given (null: unset). */
  config?: Record<string, unknown>;
  /** Image config fields that hold at least these items (lists) or keys (maps). */
  configContains?: Record<string, unknown>;
  configNotContains?: Record<string, unknown>;
  /** Image config fields that must be set and not empty. */
  configNotEmpty?: string[];
  /** Image config list fields with an item matching this regular expression. */
  configItemMatches?: Record<string, string>;
  /** Top-level fields of the image config (`os`, `architecture`, `created` as seconds). */
  image?: Record<string, unknown>;
  imageNotEmpty?: string[];
  history?: HistoryExpectation;
  /** Every history entry's `created`, in seconds since 1970. */
  historyCreated?: number;
  diffIds?: { base?: string; count?: number; added?: number };
  /** The exported image's manifest digest equals (or differs from) that of step N. */
  digestSameAs?: number;
  /** index.json of `-o type=oci,tar=false` equals that of step N. */
  ociIndexSameAs?: number;
  /** index.json of the OCI layout export. */
  ociIndex?: { manifests?: number; sameManifests?: boolean; annotations?: Record<string, string>[] };
}

export interface BuildFlags {
  args?: Record<string, string>;
  target?: string;
  /** `-f`, relative to the context. */
  file?: string;
  secrets?: Record<string, string>;
  ssh?: boolean;
  noCache?: boolean;
  noCacheFilter?: string[];
  network?: string;
  labels?: Record<string, string>;
  platform?: string;
  /** NAME → a directory made of these entries, or a source string (docker-image://, oci-layout://). */
  buildContexts?: Record<
    string,
    { context: Record<string, ContextEntry> } | { ociLayoutOfStep: number } | string
  >;
  tag?: string;
  push?: boolean;
  /** Also export the result as an OCI layout directory (for ociIndex / ociIndexSameAs / oci-layout contexts). */
  ociName?: string;
  cacheTo?: string;
  cacheFrom?: string[];
  env?: Record<string, string>;
}

export interface Step extends BuildFlags {
  dockerfile?: string;
  /** Entries to write over the context (null: remove). */
  context?: Record<string, ContextEntry>;
  /** Start from an empty context (before `context` is applied). */
  freshContext?: boolean;
  /** `tbuild prune --all` before this build (BuildKit's ensurePruneAll). */
  prune?: boolean;
  /** Images to remove from the store before this build. */
  rmi?: string[];
  expect?: Expectation;
}

export interface Scenario extends Step {
  name: string;
  test: string;
  note?: string;
  /** Why tbuild does not do what the Go test expects: the runner counts it as skipped. */
  knownDifference?: string;
  /**
   * The difference shows only sometimes (it depends on the clock: two builds in the same second
   * agree): a run where the scenario passes is not taken for the difference being gone.
   */
  knownDifferenceIntermittent?: boolean;
  /** Write the Dockerfile outside the context (the Go test's separate dockerfile mount). */
  dockerfileOutside?: boolean;
  /** Where the Dockerfile is written inside the context (default `Dockerfile`). */
  dockerfilePath?: string;
  /** Give tbuild the context and Dockerfile as paths relative to its working directory, the context. */
  cwdRelative?: boolean;
  /** No -f: tbuild finds the Dockerfile in the context by itself. */
  noFileFlag?: boolean;
  /** Make the context a git repository with this tag, served over plain HTTP at `{{HTTP}}/.git`. */
  gitRepo?: { tag: string };
  /** HTTP resources served for `{{HTTP}}/PATH` URLs. */
  http?: Record<
    string,
    { content?: string; tar?: TarEntry[]; gzip?: boolean; lastModified?: number; etag?: string }
  >;
  /** A store of its own (a scenario that prunes, or that must see a cold cache). */
  isolatedStore?: boolean;
  steps?: Step[];
  /** Set by the loader: the fixture file it comes from. */
  fixture: string;
}

export interface FixtureFile {
  source: string;
  commit: string;
  scenarios: Scenario[];
}

/** Every scenario of every fixture file of `dir`, in file order. */
export function loadScenarios(dir: string): Scenario[] {
  const scenarios: Scenario[] = [];
  for (const name of readdirSync(dir)
    .filter((n) => n.endsWith(".yaml"))
    .sort()) {
    const fixture = parseYaml(readFileSync(path.join(dir, name), "utf8")) as FixtureFile;
    for (const scenario of fixture.scenarios) scenarios.push({ ...scenario, fixture: name });
  }
  return scenarios;
}

// ---------------------------------------------------------------------------------------------
// The base images

/**
 * The root filesystem of the `busybox` the Go tests pull from Docker Hub, as far as they rely on
 * it: Debian's busybox with the accounts of Docker's image (buildroot's /etc/passwd and
 * /etc/group, with the home directories it creates), and an `adduser` (Debian's busybox-static
 * lacks the applet) that does what `adduser -D NAME` does there, and /usr/bin/env; made at `rootfs`.
 * The BuildKit oracle (test/oracle/) imports the same into both builders.
 */
export async function makeScenarioBusyboxRootfs(rootfs: string): Promise<string> {
  await cp(await busyboxRootfs(), rootfs, { recursive: true, verbatimSymlinks: true });
  await writeFile(path.join(rootfs, "etc", "passwd"), DOCKER_BUSYBOX_PASSWD);
  await writeFile(path.join(rootfs, "etc", "group"), DOCKER_BUSYBOX_GROUP);
  for (const line of DOCKER_BUSYBOX_PASSWD.trim().split("\n")) {
    const [, , uid, gid, , home] = line.split(":");
    const dir = path.join(rootfs, home!);
    if (existsSync(dir)) continue;
    await mkdir(dir, { recursive: true });
    await chown(dir, Number(uid), Number(gid));
    await chmod(dir, 0o755);
  }
  await writeFile(path.join(rootfs, "bin", "adduser"), ADDUSER, { mode: 0o755 });
  await mkdir(path.join(rootfs, "usr", "bin"), { recursive: true });
  await symlink("../../bin/env", path.join(rootfs, "usr", "bin", "env"));
  return rootfs;
}

const DOCKER_BUSYBOX_PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`;

const DOCKER_BUSYBOX_GROUP = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nobody:x:65534:
`;

/** busybox's `adduser -D NAME`: the first free id from 1000, a group of the same name, a home. */
const ADDUSER = `#!/bin/sh
while getopts DHSh:g:s:G:u:k: opt; do :; done
shift $((OPTIND - 1))
name=$1
uid=1000
while cut -d: -f3 /etc/passwd /etc/group | grep -qx "$uid"; do uid=$((uid + 1)); done
echo "$name:x:$uid:" >> /etc/group
echo "$name:x:$uid:$uid:Linux User,,,:/home/$name:/bin/sh" >> /etc/passwd
mkdir -p "/home/$name" && chown "$uid:$uid" "/home/$name"
`;

// ---------------------------------------------------------------------------------------------
// Laying out contexts

/** `{{NAME}}` placeholders: the local registry, the HTTP server, the echo server. */
export type Placeholders = Record<string, string>;

export function substitute(text: string, values: Placeholders): string {
  return text.replace(/\{\{([A-Z_]+)\}\}/g, (whole, key: string) => values[key] ?? whole);
}

function mode(text: string | undefined, fallback: number): number {
  return text === undefined ? fallback : Number.parseInt(text, 8);
}

/** A tar archive of `entries` (ustar, with the Go tests' modes and types). */
export function makeTar(entries: TarEntry[], gzip = false): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = Buffer.from(entry.content ?? "", "utf8");
    const type = entry.type ?? "file";
    const header = new tar.Header({
      path: entry.name,
      mode: mode(entry.mode, type === "dir" ? 0o755 : 0o644),
      uid: 0,
      gid: 0,
      size: type === "file" ? body.length : 0,
      mtime: new Date((entry.mtime ?? 0) * 1000),
      type: { file: "File", dir: "Directory", symlink: "SymbolicLink", hardlink: "Link" }[type] as "File",
      linkpath: entry.linkname,
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (type === "file" && body.length > 0) {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  const archive = Buffer.concat(blocks);
  return gzip ? gzipSync(archive) : archive;
}

/** Writes `entries` under `dir`: parents first, so a directory's mode is set after its files. */
export async function writeEntries(
  dir: string,
  entries: Record<string, ContextEntry>,
  values: Placeholders,
): Promise<void> {
  const dirModes: [string, number][] = [];
  for (const [name, entry] of Object.entries(entries)) {
    const full = path.join(dir, name);
    await rm(full, { recursive: true, force: true });
    if (entry === null) continue;
    await mkdir(path.dirname(full), { recursive: true });
    if (typeof entry === "string") {
      await writeFile(full, substitute(entry, values));
      await chmod(full, 0o600);
    } else if (entry.dir) {
      await mkdir(full, { recursive: true });
      dirModes.push([full, mode(entry.mode, 0o700)]);
    } else if (entry.symlink !== undefined) {
      await symlink(entry.symlink, full);
    } else if (entry.socket) {
      await makeSocket(full);
    } else {
      const data = entry.tar
        ? makeTar(entry.tar, entry.gzip)
        : entry.zeros !== undefined
          ? Buffer.alloc(entry.zeros)
          : Buffer.from(substitute(entry.content ?? "", values), "utf8");
      await writeFile(full, data);
      await chmod(full, mode(entry.mode, 0o600));
    }
  }
  // Deepest first, so that a 0500 parent does not stop its children from being chmodded.
  for (const [full, m] of dirModes.sort((a, b) => b[0].length - a[0].length)) await chmod(full, m);
}

/** A unix socket file at `file`: bound elsewhere, hard-linked here, and the server closed. */
async function makeSocket(file: string): Promise<void> {
  const bound = `${file}.bound`;
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(bound, () => resolve());
  });
  await link(bound, file);
  // Closing unlinks the bound name; the inode stays at `file`.
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

// ---------------------------------------------------------------------------------------------
// Running tbuild

export interface BuildResult {
  status: number | null;
  output: string;
  localDir?: string;
  tarFile?: string;
  ociDir?: string;
  imageName?: string;
  metadata?: Record<string, unknown>;
}

export function runTbuild(
  args: string[],
  env: Record<string, string>,
  cwd: string,
  timeoutMs: number,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      tbuildBin,
      args,
      {
        env: { ...process.env, ...env },
        cwd,
        maxBuffer: 64 * 1024 * 1024,
        timeout: timeoutMs,
        encoding: "utf8",
      },
      (error, stdout, stderr) => {
        const status = error ? (typeof error.code === "number" ? error.code : null) : 0;
        resolve({
          status,
          stdout,
          stderr: error && status === null ? `${stderr}\n${error.message}` : stderr,
        });
      },
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Checking results

/** What a result holds at `file`, for messages and comparisons. */
function describe(file: string): { kind: "absent" | "file" | "dir" | "symlink" | "other"; data?: Buffer } {
  let stat: ReturnType<typeof lstatSync>;
  try {
    stat = lstatSync(file);
  } catch {
    return { kind: "absent" };
  }
  if (stat.isSymbolicLink()) return { kind: "symlink", data: Buffer.from(readlinkSync(file)) };
  if (stat.isDirectory()) return { kind: "dir" };
  if (stat.isFile()) return { kind: "file", data: readFileSync(file) };
  return { kind: "other" };
}

/** The mismatches of the files of a local export `dir` against `files`; [] when all hold. */
export function checkFiles(
  dir: string,
  files: Record<string, FileExpectation>,
  earlier: (step: number, file: string) => Buffer | undefined,
  source: (kind: "context" | "http", name: string) => Buffer | undefined,
): string[] {
  const problems: string[] = [];
  for (const [name, expectation] of Object.entries(files)) {
    const want = typeof expectation === "string" ? { content: expectation } : expectation;
    const full = path.join(dir, name);
    const got = describe(full);
    if (want.absent) {
      if (got.kind !== "absent") problems.push(`${name}: should not exist, is a ${got.kind}`);
      continue;
    }
    if (got.kind === "absent") {
      problems.push(`${name}: missing`);
      continue;
    }
    // A file's content is read through symlinks, as os.ReadFile does in the Go tests.
    const content =
      got.kind === "symlink" && want.symlink === undefined && existsSync(full) && statSync(full).isFile()
        ? readFileSync(full)
        : got.data;
    const text = content?.toString("utf8");
    if (want.type && got.kind !== want.type) problems.push(`${name}: a ${got.kind}, not a ${want.type}`);
    if (want.symlink !== undefined && (got.kind !== "symlink" || text !== want.symlink)) {
      problems.push(
        `${name}: should be a symlink to ${JSON.stringify(want.symlink)}, is a ${got.kind} ${JSON.stringify(text)}`,
      );
    }
    if (want.content !== undefined && text !== want.content) {
      problems.push(`${name}: content ${JSON.stringify(text)}, expected ${JSON.stringify(want.content)}`);
    }
    if (want.contains !== undefined && !text?.includes(want.contains)) {
      problems.push(`${name}: ${JSON.stringify(text)} does not contain ${JSON.stringify(want.contains)}`);
    }
    if (want.notContains !== undefined && text?.includes(want.notContains)) {
      problems.push(`${name}: ${JSON.stringify(text)} contains ${JSON.stringify(want.notContains)}`);
    }
    if (want.matches !== undefined && !new RegExp(want.matches).test(text ?? "")) {
      problems.push(`${name}: ${JSON.stringify(text)} does not match /${want.matches}/`);
    }
    if (want.minLength !== undefined && (content?.length ?? 0) < want.minLength) {
      problems.push(`${name}: ${content?.length ?? 0} bytes, expected at least ${want.minLength}`);
    }
    if (want.mode !== undefined) {
      const m = lstatSync(full).mode & 0o7777;
      if (m !== Number.parseInt(want.mode, 8))
        problems.push(`${name}: mode ${m.toString(8)}, expected ${want.mode}`);
    }
    if (want.uid !== undefined && lstatSync(full).uid !== want.uid) {
      problems.push(`${name}: uid ${lstatSync(full).uid}, expected ${want.uid}`);
    }
    if (want.gid !== undefined && lstatSync(full).gid !== want.gid) {
      problems.push(`${name}: gid ${lstatSync(full).gid}, expected ${want.gid}`);
    }
    if (want.mtime !== undefined && Math.floor(lstatSync(full).mtimeMs / 1000) !== want.mtime) {
      problems.push(`${name}: mtime ${Math.floor(lstatSync(full).mtimeMs / 1000)}, expected ${want.mtime}`);
    }
    for (const [kind, from] of [
      ["context", want.sameAsContext],
      ["http", want.sameAsHttp],
    ] as const) {
      if (from === undefined) continue;
      const expected = source(kind, from);
      if (!expected || !content || !expected.equals(content))
        problems.push(`${name}: not the same bytes as the ${kind}'s ${from}`);
    }
    if (want.sameFileAs !== undefined) {
      const other = statSync(path.join(dir, want.sameFileAs));
      const self = statSync(full);
      if (other.ino !== self.ino || other.dev !== self.dev)
        problems.push(`${name}: not the same file as ${want.sameFileAs}`);
    }
    for (const [step, same] of [
      [want.sameAs, true],
      [want.differsFrom, false],
    ] as const) {
      if (step === undefined) continue;
      const before = earlier(step, name);
      if (before === undefined) problems.push(`${name}: step ${step} has no such file to compare with`);
      else if (before.equals(content ?? Buffer.alloc(0)) !== same) {
        problems.push(
          `${name}: ${same ? "differs from" : "same as"} step ${step}'s (${JSON.stringify(text)})`,
        );
      }
    }
  }
  return problems;
}

export interface TarItem {
  type: string;
  data: Buffer;
  uid: number;
  gid: number;
  mode: number;
  linkpath?: string;
}

/** The entries of a tar file by path (without a leading `./`; directories with a trailing `/`). */
export async function readTar(file: string): Promise<Map<string, TarItem>> {
  const items = new Map<string, TarItem>();
  await tar.t({
    file,
    onReadEntry: (entry) => {
      const chunks: Buffer[] = [];
      entry.on("data", (chunk: Buffer) => chunks.push(chunk));
      entry.on("end", () => {
        let name = entry.path.replace(/^\.\//, "");
        if (entry.type === "Directory" && !name.endsWith("/")) name += "/";
        items.set(name, {
          type: entry.type,
          data: Buffer.concat(chunks),
          uid: entry.uid ?? 0,
          gid: entry.gid ?? 0,
          mode: entry.mode ?? 0,
          linkpath: entry.linkpath,
        });
      });
    },
  });
  return items;
}

export function checkTarFiles(items: Map<string, TarItem>, files: Record<string, FileExpectation>): string[] {
  const problems: string[] = [];
  for (const [name, expectation] of Object.entries(files)) {
    const want = typeof expectation === "string" ? { content: expectation } : expectation;
    const item = items.get(name);
    if (want.absent) {
      if (item) problems.push(`${name}: should not be in the tar`);
      continue;
    }
    if (!item) {
      problems.push(`${name}: not in the tar (it holds ${[...items.keys()].slice(0, 20).join(", ")})`);
      continue;
    }
    const text = item.data.toString("utf8");
    if (want.content !== undefined && text !== want.content) {
      problems.push(`${name}: content ${JSON.stringify(text)}, expected ${JSON.stringify(want.content)}`);
    }
    if (want.uid !== undefined && item.uid !== want.uid)
      problems.push(`${name}: uid ${item.uid}, expected ${want.uid}`);
    if (want.gid !== undefined && item.gid !== want.gid)
      problems.push(`${name}: gid ${item.gid}, expected ${want.gid}`);
    if (want.mode !== undefined && (item.mode & 0o7777) !== Number.parseInt(want.mode, 8)) {
      problems.push(`${name}: mode ${(item.mode & 0o7777).toString(8)}, expected ${want.mode}`);
    }
  }
  return problems;
}

/** Deep equality of JSON values, where a missing field and null are the same (Go's nil). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if ((a === undefined || a === null) && (b === undefined || b === null)) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].every((k) =>
      jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
    );
  }
  return a === b;
}

/** `want` ⊆ `got`: every list item, every map key with its value. */
export function jsonContains(got: unknown, want: unknown): boolean {
  if (Array.isArray(want)) return Array.isArray(got) && want.every((w) => got.some((g) => jsonEqual(g, w)));
  if (want && typeof want === "object") {
    return (
      !!got &&
      typeof got === "object" &&
      Object.entries(want).every(
        ([k, v]) => k in (got as object) && jsonContains((got as Record<string, unknown>)[k], v),
      )
    );
  }
  return jsonEqual(got, want);
}

/** A short digest of text, for names of per-scenario things. */
export function shortHash(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 10);
}
