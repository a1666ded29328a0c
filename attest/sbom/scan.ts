/**
 * The scanner: the packages an image's filesystem holds, from its package databases (dpkg, apk,
 * rpm) and from a walk of the whole tree for what language ecosystems leave (node_modules
 * manifests, Python metadata, Go binaries), as syft's image catalogers do, natively and offline.
 *
 * A bad entry (unparsable, too large, not a regular file) is named in `warnings` and skipped; the
 * scan never throws for what an image holds. The walk follows no symlink; the result is sorted, so
 * the same filesystem gives the same result whatever order the reads finish in.
 */
import { catalogApk } from "./apk.js";
import { catalogDpkg } from "./dpkg.js";
import { type ImageFilesystem, readImageFile } from "./filesystem.js";
import { catalogGoBinary, MIN_GO_BINARY_BYTES } from "./go-binary.js";
import { catalogNpmManifest, isNodeModulesManifest } from "./npm.js";
import type { CatalogContext, Distro, FileChecksums, FoundPackage } from "./package.js";
import { catalogPythonMetadata } from "./python.js";
import { catalogRpm } from "./rpm.js";

export interface ScanResult {
  distro?: Distro;
  /** Sorted by the file they were found in, then type, name and version. */
  packages: FoundPackage[];
  /** The files packages were found in (absolute paths in the image), by path. */
  files: Record<string, FileChecksums>;
  /** Bad entries, `PATH: what`, sorted. */
  warnings: string[];
}

/** How many candidate files are read at once. */
const READ_CONCURRENCY = 8;

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export async function scanFilesystem(fs: ImageFilesystem): Promise<ScanResult> {
  const warnings: string[] = [];
  const files = new Map<string, FileChecksums>();
  const warn = (file: string, message: string) => warnings.push(`${file}: ${message}`);
  // Whatever an image makes a read throw (a symlink loop, a path too long, EACCES, EIO) is a warning
  // about the path being read: the scan goes on with the rest.
  const guarded = async <T>(file: string, fallback: T, read: () => Promise<T>): Promise<T> => {
    try {
      return await read();
    } catch (err) {
      warn(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      return fallback;
    }
  };
  const distro = await guarded("/etc/os-release", undefined, () => readOsRelease(fs, warn));
  const ctx: CatalogContext = {
    fs,
    distro,
    warn,
    evidence: (file, checksums) => files.set(file, checksums),
  };
  const packages: FoundPackage[] = [
    ...(await guarded("/var/lib/dpkg", [], () => catalogDpkg(ctx))),
    ...(await guarded("/lib/apk/db/installed", [], () => catalogApk(ctx))),
    ...(await guarded("/var/lib/rpm", [], () => catalogRpm(ctx))),
  ];
  const candidates = await walk(fs, warn);
  for (let i = 0; i < candidates.length; i += READ_CONCURRENCY) {
    const batch = await Promise.all(
      candidates.slice(i, i + READ_CONCURRENCY).map((c) => guarded(`/${c.rel}`, [], () => c.read(ctx))),
    );
    for (const found of batch) packages.push(...found);
  }
  packages.sort(
    (a, b) =>
      compare(a.foundIn, b.foundIn) ||
      compare(a.type, b.type) ||
      compare(a.name, b.name) ||
      compare(a.version, b.version),
  );
  return {
    distro,
    packages,
    files: Object.fromEntries([...files].sort(([a], [b]) => compare(a, b))),
    warnings: warnings.sort(compare),
  };
}

type Candidate = (ctx: CatalogContext) => Promise<FoundPackage[]>;

/** A walk stops here: an image of more entries is built to exhaust a scanner. */
export const MAX_WALK_ENTRIES = 2_000_000;

/** The files of the tree the language catalogers read, in path order; no symlink is followed. */
async function walk(
  fs: ImageFilesystem,
  warn: (file: string, message: string) => void,
): Promise<{ rel: string; read: Candidate }[]> {
  const found: { rel: string; read: Candidate }[] = [];
  let seen = 0;
  const visit = async (dir: string): Promise<void> => {
    if (seen > MAX_WALK_ENTRIES) return;
    let entries: Awaited<ReturnType<ImageFilesystem["list"]>>;
    try {
      entries = await fs.list(dir);
    } catch (err) {
      warn(`/${dir}`, `cannot be listed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      return;
    }
    seen += entries.length;
    if (seen > MAX_WALK_ENTRIES) {
      warn(`/${dir}`, `the walk stopped here: the image has more than ${MAX_WALK_ENTRIES} entries`);
      return;
    }
    const below: Promise<void>[] = [];
    for (const entry of entries) {
      const rel = dir === "" ? entry.name : `${dir}/${entry.name}`;
      if (entry.kind === "directory") {
        if (entry.name.endsWith(".dist-info")) {
          found.push({ rel, read: async (ctx) => one(await catalogPythonMetadata(ctx, `${rel}/METADATA`)) });
        } else if (entry.name.endsWith(".egg-info")) {
          found.push({ rel, read: async (ctx) => one(await catalogPythonMetadata(ctx, `${rel}/PKG-INFO`)) });
        }
        below.push(visit(rel));
      } else if (entry.kind === "file") {
        if (entry.name === "package.json" && isNodeModulesManifest(rel)) {
          found.push({ rel, read: async (ctx) => one(await catalogNpmManifest(ctx, rel)) });
        } else if (entry.name.endsWith(".egg-info")) {
          found.push({ rel, read: async (ctx) => one(await catalogPythonMetadata(ctx, rel)) });
        } else if (entry.mode & 0o111 && entry.size >= MIN_GO_BINARY_BYTES) {
          found.push({ rel, read: (ctx) => catalogGoBinary(ctx, rel) });
        }
      }
    }
    await Promise.all(below);
  };
  await visit("");
  return found.sort((a, b) => compare(a.rel, b.rel));
}

function one(pkg: FoundPackage | undefined): FoundPackage[] {
  return pkg ? [pkg] : [];
}

const MAX_OS_RELEASE_BYTES = 64 << 10;

/** ID and VERSION_ID of etc/os-release (else usr/lib/os-release), shell-style values unquoted. */
async function readOsRelease(
  fs: ImageFilesystem,
  warn: (file: string, message: string) => void,
): Promise<Distro | undefined> {
  for (const candidate of ["etc/os-release", "usr/lib/os-release"]) {
    const file = await readImageFile(fs, candidate, MAX_OS_RELEASE_BYTES);
    if (!file) continue;
    if (!file.ok) {
      warn(`/${file.rel}`, file.problem);
      continue;
    }
    const values = new Map<string, string>();
    for (const line of file.bytes.toString("utf8").split("\n")) {
      const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
      if (match) values.set(match[1], match[2].replace(/^(["'])(.*)\1$/, "$2"));
    }
    const id = values.get("ID");
    if (id && /^[a-z0-9._-]+$/.test(id)) return { id, versionId: values.get("VERSION_ID") ?? "" };
    warn(`/${file.rel}`, "no ID: the distribution is unknown");
    return undefined;
  }
  return undefined;
}
