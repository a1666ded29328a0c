/**
 * A case's build context on disk, kept equal to its tree (scenario.ts) through the edits: each edit
 * changes the tree, and only what changed is written, in place where a user's editor or `git
 * checkout` would write it (a content edit rewrites the file, so its hard links see it too), so
 * that tbuild's remembered hashes and reused snapshots meet the changes real rebuilds meet.
 * Afterwards the disk is checked against the tree: the model reads the tree, tbuild the disk.
 */
import { createHash } from "node:crypto";
import {
  chmodSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import {
  addEntry,
  CLAMPED_MTIMES,
  type Content,
  dataOf,
  type Edit,
  type Entry,
  MTIMES,
  removeEntry,
  type Tree,
} from "./scenario.js";

/** The bytes of a content spec: text, `@large:<seed>:<bytes>`, `@tar:<variant>`. */
export function contentBytes(content: Content): Buffer {
  const large = /^@large:(\d+):(\d+)$/.exec(content);
  if (large) return largeBytes(Number(large[1]), Number(large[2]));
  const tar = /^@tar:(\d+)$/.exec(content);
  if (tar) return tarBytes(Number(tar[1]));
  return Buffer.from(content);
}

const largeCache = new Map<string, Buffer>();

function largeBytes(seed: number, size: number): Buffer {
  const known = largeCache.get(`${seed}:${size}`);
  if (known) return known;
  const block = Buffer.alloc(1 << 16);
  let x = seed * 2654435761;
  for (let i = 0; i < block.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    block[i] = x >>> 24;
  }
  const out = Buffer.alloc(size);
  for (let off = 0; off < size; off += block.length)
    block.copy(out, off, 0, Math.min(block.length, size - off));
  largeCache.set(`${seed}:${size}`, out);
  return out;
}

/** A small ustar archive with fixed metadata: the same bytes for the same variant, always. */
function tarBytes(variant: number): Buffer {
  const entries: { name: string; type: "0" | "5"; mode: number; data?: string }[] =
    variant === 1
      ? [
          { name: "pkg/", type: "5", mode: 0o755 },
          { name: "pkg/run.sh", type: "0", mode: 0o755, data: "#!/bin/sh\necho run\n" },
          { name: "pkg/x.txt", type: "0", mode: 0o644, data: "x1\n" },
        ]
      : [
          { name: "pkg/", type: "5", mode: 0o700 },
          { name: "pkg/new.txt", type: "0", mode: 0o600, data: "new\n" },
          { name: "pkg/x.txt", type: "0", mode: 0o644, data: "x2\n" },
        ];
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? "");
    const header = Buffer.alloc(512);
    const field = (value: string, offset: number, length: number) =>
      header.write(value, offset, length, "ascii");
    const octal = (value: number, offset: number, length: number) =>
      field(`${value.toString(8).padStart(length - 1, "0")}\0`, offset, length);
    field(e.name, 0, 100);
    octal(e.mode, 100, 8);
    octal(0, 108, 8);
    octal(0, 116, 8);
    octal(data.length, 124, 12);
    octal(MTIMES[0], 136, 12);
    field("        ", 148, 8);
    field(e.type, 156, 1);
    field("ustar\0", 257, 6);
    field("00", 263, 2);
    let sum = 0;
    for (const byte of header) sum += byte;
    field(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** Who owns the context's files: root, or the rootless user (whose tbuild must read them). */
export interface Owner {
  uid: number;
  gid: number;
}

const DIR_MTIME = CLAMPED_MTIMES[0];

/** Writes the differences between `before` and `after` under `dir` (`before` = {} for a new context). */
export function syncContext(dir: string, before: Tree, after: Tree, owner: Owner): void {
  const changed = (p: string): boolean => {
    const a = before[p];
    const b = after[p];
    if (!a || !b || a.kind !== b.kind) return true;
    if (a.kind === "symlink" && b.kind === "symlink") return a.target !== b.target;
    if (a.kind === "hardlink" && b.kind === "hardlink") return a.of !== b.of || changed(a.of);
    return false;
  };
  // Removals, deepest first: what is gone, or is now of another kind (or another link).
  for (const p of Object.keys(before).sort().reverse()) {
    if (changed(p)) rmSync(path.join(dir, p), { recursive: true, force: true });
  }
  // Creations and updates, parents first; hard links once their files are there.
  const touched = new Set<string>();
  const order = Object.keys(after).sort();
  for (const p of order) {
    const entry = after[p]!;
    const full = path.join(dir, p);
    const exists = lstatSync(full, { throwIfNoEntry: false }) !== undefined;
    if (entry.kind === "dir") {
      if (!exists) {
        mkdirSync(full);
        touched.add(p);
      } else if ((before[p] as Extract<Entry, { kind: "dir" }>).mode !== entry.mode) touched.add(p);
    } else if (entry.kind === "file") {
      const old = before[p];
      if (!exists || old?.kind !== "file" || old.content !== entry.content) {
        writeFileSync(full, contentBytes(entry.content));
        touched.add(p);
      } else if (old.mode !== entry.mode || old.mtime !== entry.mtime) touched.add(p);
    } else if (entry.kind === "symlink") {
      if (!exists) {
        symlinkSync(entry.target, full);
        touched.add(p);
      } else if ((before[p] as Extract<Entry, { kind: "symlink" }>).mtime !== entry.mtime) touched.add(p);
    }
  }
  for (const p of order) {
    const entry = after[p]!;
    const full = path.join(dir, p);
    if (entry.kind === "hardlink" && lstatSync(full, { throwIfNoEntry: false }) === undefined) {
      linkSync(path.join(dir, entry.of), full);
    }
  }
  // Owner, then mode (a chown clears setuid bits), then times; directories' last, deepest first,
  // as writing into a directory moves its mtime.
  for (const p of order) {
    const entry = after[p]!;
    if (!touched.has(p) || entry.kind === "dir" || entry.kind === "hardlink") continue;
    const full = path.join(dir, p);
    lchownSync(full, owner.uid, owner.gid);
    if (entry.kind === "file") {
      chmodSync(full, entry.mode);
      lutimesSync(full, entry.mtime, entry.mtime);
    } else {
      lutimesSync(full, entry.mtime, entry.mtime);
    }
  }
  for (const p of order.slice().reverse()) {
    const entry = after[p]!;
    if (entry.kind !== "dir") continue;
    const full = path.join(dir, p);
    if (touched.has(p)) {
      lchownSync(full, owner.uid, owner.gid);
      chmodSync(full, entry.mode);
    }
    lutimesSync(full, DIR_MTIME, DIR_MTIME);
  }
  lutimesSync(dir, DIR_MTIME, DIR_MTIME);
}

/** Differences between the disk under `dir` and `tree`; empty when they agree. */
export function contextDrift(dir: string, tree: Tree): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const inodes = new Map<number, string>();
  const walk = (abs: string, rel: string) => {
    for (const name of readdirSync(abs).sort()) {
      const p = rel === "" ? name : `${rel}/${name}`;
      const full = path.join(abs, name);
      const st = lstatSync(full);
      seen.add(p);
      const entry = tree[p];
      if (!entry) {
        problems.push(`${p}: on disk, not in the tree`);
        continue;
      }
      if (st.isDirectory()) {
        if (entry.kind !== "dir") problems.push(`${p}: a directory on disk, a ${entry.kind} in the tree`);
        else if ((st.mode & 0o7777) !== entry.mode)
          problems.push(`${p}: mode ${(st.mode & 0o7777).toString(8)}`);
        walk(full, p);
      } else if (st.isSymbolicLink()) {
        if (entry.kind !== "symlink" || readlinkSync(full) !== entry.target)
          problems.push(`${p}: symlink differs`);
      } else {
        const data = dataOf(tree, p);
        if (!data) {
          problems.push(`${p}: a file on disk, a ${entry.kind} in the tree`);
          continue;
        }
        const want = createHash("sha256").update(contentBytes(data.entry.content)).digest("hex");
        const have = createHash("sha256").update(readFileSync(full)).digest("hex");
        if (want !== have) problems.push(`${p}: content differs`);
        if ((st.mode & 0o7777) !== data.entry.mode)
          problems.push(`${p}: mode ${(st.mode & 0o7777).toString(8)}`);
        if (Math.trunc(st.mtimeMs / 1000) !== data.entry.mtime) problems.push(`${p}: mtime differs`);
        const first = inodes.get(st.ino);
        if (first !== undefined && dataOf(tree, first)?.path !== data.path)
          problems.push(`${p}: shares ${first}'s inode`);
        if (first === undefined) inodes.set(st.ino, p);
        const links = Object.keys(tree).filter((q) => dataOf(tree, q)?.path === data.path).length;
        if (st.nlink !== links) problems.push(`${p}: ${st.nlink} links on disk, ${links} in the tree`);
      }
    }
  };
  walk(dir, "");
  for (const p of Object.keys(tree)) if (!seen.has(p)) problems.push(`${p}: in the tree, not on disk`);
  return problems;
}

/** The tree after `edit` (a new object), or the same tree when the edit finds nothing to change. */
export function applyContextEdit(tree: Tree, edit: Edit): Tree {
  const next = structuredClone(tree);
  const paths = Object.keys(next).sort();
  const pick = <T>(list: T[], n: number): T | undefined =>
    list.length === 0 ? undefined : list[n % list.length];
  const isDataPath = (p: string) => dataOf(next, p) !== undefined;
  const isProtected = (p: string) => p === "Dockerfile" || p === ".dockerignore";
  switch (edit.edit) {
    case "content": {
      const p = pick(
        paths.filter((q) => isDataPath(q) && !isProtected(q)),
        edit.pick,
      );
      if (p !== undefined) dataOf(next, p)!.entry.content = edit.content;
      break;
    }
    case "mode": {
      const p = pick(
        paths.filter((q) => (isDataPath(q) || next[q]!.kind === "dir") && !isProtected(q)),
        edit.pick,
      );
      if (p === undefined) break;
      const entry = next[p]!;
      if (entry.kind === "dir") entry.mode = edit.mode & 0o777 ? (edit.mode & 0o777) | 0o700 : 0o755;
      else dataOf(next, p)!.entry.mode = edit.mode;
      break;
    }
    case "mtime": {
      // Only between mtimes layers clamp: an mtime no step reads (see scenario.ts).
      const clamped = (m: number) => (CLAMPED_MTIMES as readonly number[]).includes(m);
      const p = pick(
        paths.filter((q) => {
          const e = next[q]!;
          return !isProtected(q) && ((e.kind === "file" && clamped(e.mtime)) || e.kind === "symlink");
        }),
        edit.pick,
      );
      if (p === undefined) break;
      const entry = next[p] as Extract<Entry, { kind: "file" | "symlink" }>;
      entry.mtime = entry.mtime === CLAMPED_MTIMES[0] ? CLAMPED_MTIMES[1] : CLAMPED_MTIMES[0];
      break;
    }
    case "add": {
      // A file replaced by the same bytes keeps its mtime: an mtime of its own is an mtime edit,
      // which goes between clamped times only (scenario.ts), as a cached COPY keeps the old one.
      const before = dataOf(next, edit.path);
      const entry = edit.entry;
      const same =
        entry.kind === "file" && before?.path === edit.path && before.entry.content === entry.content;
      addEntry(next, edit.path, same ? { ...entry, mtime: before.entry.mtime } : entry);
      break;
    }
    case "remove": {
      const p = pick(
        paths.filter((q) => !isProtected(q)),
        edit.pick,
      );
      if (p !== undefined) removeEntry(next, p);
      break;
    }
    case "file-to-dir": {
      const p = pick(
        paths.filter((q) => next[q]!.kind !== "dir" && !isProtected(q)),
        edit.pick,
      );
      if (p === undefined) break;
      removeEntry(next, p);
      addEntry(next, `${p}/inner`, { kind: "file", content: "inner\n", mode: 0o644, mtime: MTIMES[1] });
      break;
    }
    case "dir-to-file": {
      const p = pick(
        paths.filter((q) => next[q]!.kind === "dir"),
        edit.pick,
      );
      if (p === undefined) break;
      removeEntry(next, p);
      addEntry(next, p, { kind: "file", content: edit.content, mode: 0o644, mtime: MTIMES[1] });
      break;
    }
    case "retarget": {
      const p = pick(
        paths.filter((q) => next[q]!.kind === "symlink"),
        edit.pick,
      );
      if (p !== undefined) (next[p] as Extract<Entry, { kind: "symlink" }>).target = edit.target;
      break;
    }
    case "unlink": {
      // A hard link replaced by a copy of its file (as a checkout or a copy tool leaves it).
      const p = pick(
        paths.filter((q) => next[q]!.kind === "hardlink"),
        edit.pick,
      );
      if (p !== undefined) next[p] = { ...dataOf(next, p)!.entry };
      break;
    }
    default:
      break;
  }
  return next;
}
