/**
 * The context sync of a remote build (worker/remote/context-sync.ts), both halves in one process
 * without a connection: the client's listing and data, the worker's plan and copy. Its shortcuts
 * (small files read whole and gathered into large chunks; a file the last sync recorded and that
 * nobody touched since left alone) must give what the plain way gives: the data is judged by
 * GNU tar, and after every step of a seeded random history of edits (and of tampering with the
 * worker's copy) the copy kept from sync to sync must equal both the client's tree and a copy
 * made from nothing.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  createWriteStream,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  contextData,
  decodeListing,
  encodeListing,
  filesToSend,
  listContext,
  SyncedContext,
  type SyncPlan,
} from "../../../worker/remote/context-sync.js";
import { tempDirs } from "../../helpers/temp.js";

const tempDir = tempDirs();

interface Seen {
  type: "file" | "dir" | "symlink";
  mode?: number;
  /** Whole milliseconds (the copy's times are set from a Date). */
  mtimeMs?: number;
  sha256?: string;
  link?: string;
}

/** Every entry under `root`: type, permission bits, mtime, content hash or link target. */
function snapshot(root: string, roundTimes: (ns: bigint) => number): Record<string, Seen> {
  const out: Record<string, Seen> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(path.join(root, rel)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const abs = path.join(root, r);
      // In nanoseconds: a float's milliseconds (mtimeMs) round up within a fraction of a
      // microsecond of the next millisecond, where the sync's own reading does not.
      const st = lstatSync(abs, { bigint: true });
      if (st.isSymbolicLink()) out[r] = { type: "symlink", link: readlinkSync(abs) };
      else if (st.isDirectory()) {
        out[r] = { type: "dir", mode: Number(st.mode & 0o7777n), mtimeMs: roundTimes(st.mtimeNs) };
        walk(r);
      } else {
        out[r] = {
          type: "file",
          mode: Number(st.mode & 0o7777n),
          mtimeMs: roundTimes(st.mtimeNs),
          sha256: createHash("sha256").update(readFileSync(abs)).digest("hex"),
        };
      }
    }
  };
  walk("");
  return out;
}

/** The client's tree as a copy of it must look: times cut to the millisecond, as a Date keeps them. */
const ofClient = (root: string) => snapshot(root, (ns) => Number(ns / 1_000_000n));
/** A copy: its times were set from the client's in whole milliseconds (utimes may land a hair below). */
const ofCopy = (root: string) => snapshot(root, (ns) => Number((ns + 500_000n) / 1_000_000n));

/** One sync, as a remote build does it: listing, the worker's plan, the files asked, the copy made. */
async function sync(client: string, copy: SyncedContext): Promise<string[]> {
  const listing = decodeListing(encodeListing(await listContext(client, [])));
  const plan = await copy.plan(listing);
  const sent = await filesToSend(client, plan, listing);
  await copy.apply(listing, contextData(client, sent));
  return sent;
}

/** A small deterministic random source (mulberry32), so that a failure repeats. */
function random(seed: number) {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]! };
}

describe("context sync", () => {
  it("a worker asking for a path that is no file of the listing (outside it, or ignored) gets an error, and nothing is read", async () => {
    const outside = tempDir("sync-outside");
    const client = path.join(outside, "ctx");
    mkdirSync(client);
    writeFileSync(path.join(outside, "id_ed25519"), "the client's key\n");
    writeFileSync(path.join(client, "app.js"), "app\n");
    writeFileSync(path.join(client, ".env"), "TOKEN=x\n");
    const listing = await listContext(client, [".env"]);
    expect(await filesToSend(client, { need: ["app.js"], check: {} }, listing)).toEqual(["app.js"]);
    const plans: SyncPlan[] = [
      { need: ["../id_ed25519"], check: {} },
      { need: [], check: { "../id_ed25519": "0".repeat(64) } },
      { need: [".env"], check: {} },
      { need: ["."], check: {} },
    ];
    for (const plan of plans) {
      await expect(filesToSend(client, plan, listing)).rejects.toThrow(
        /the worker asked for ".*", which is not a file of the build context; nothing was sent/,
      );
    }
  });

  it("sends the asked files as a gzip'd tar that GNU tar extracts to the same bytes, modes and seconds", async () => {
    const client = tempDir("sync-data-client");
    const files: Record<string, { size: number; mode: number }> = {
      "a.txt": { size: 0, mode: 0o644 },
      "bin/run.sh": { size: 300, mode: 0o755 },
      "deep/er/still/x.c": { size: 5000, mode: 0o600 },
      // Above the size read whole: streamed.
      "big/blob.bin": { size: 3 * 1024 * 1024 + 17, mode: 0o644 },
      "after-big.txt": { size: 10, mode: 0o640 },
    };
    for (const [i, [rel, { size, mode }]] of Object.entries(files).entries()) {
      mkdirSync(path.dirname(path.join(client, rel)), { recursive: true });
      const content = Buffer.alloc(size);
      for (let b = 0; b < size; b++) content[b] = (b * 31 + i * 7) & 0xff;
      writeFileSync(path.join(client, rel), content);
      chmodSync(path.join(client, rel), mode);
      utimesSync(path.join(client, rel), 1_600_000_000 + i, 1_600_000_000 + i * 1000 + 0.5);
    }
    // Many small files: gathered into chunks of their own.
    for (let i = 0; i < 600; i++)
      writeFileSync(path.join(client, "deep", `m${i}.txt`), `${i}\n`.repeat(i % 40));
    const asked = [...Object.keys(files), ...Array.from({ length: 600 }, (_, i) => `deep/m${i}.txt`)];

    const tarFile = path.join(tempDir("sync-data-tar"), "data.tar");
    await pipeline(contextData(client, asked), createGunzip(), createWriteStream(tarFile));
    const listed = execFileSync("tar", ["-tf", tarFile], { encoding: "utf8" }).trim().split("\n");
    expect(listed).toEqual(asked);
    const out = tempDir("sync-data-out");
    execFileSync("tar", ["-xpf", tarFile, "-C", out]);
    for (const rel of asked) {
      const want = lstatSync(path.join(client, rel));
      const got = lstatSync(path.join(out, rel));
      expect(readFileSync(path.join(out, rel)).equals(readFileSync(path.join(client, rel))), rel).toBe(true);
      expect(got.mode & 0o7777, rel).toBe(want.mode & 0o7777);
      expect(Math.floor(got.mtimeMs / 1000), rel).toBe(Math.floor(want.mtimeMs / 1000));
    }
  }, 60_000);

  it.each([14, 2026, 7])(
    "keeps the worker's copy equal to the client's tree and to a fresh copy through a random history of edits and tampering (seed %i)",
    async (seed) => {
      const client = tempDir("sync-history-client");
      const work = tempDir("sync-history-worker");
      const kept = new SyncedContext(path.join(work, "kept"));
      // What a link in the copy pointed at must never be written through.
      const outside = path.join(work, "outside");
      mkdirSync(outside);
      writeFileSync(path.join(outside, "secret"), "untouched\n");
      const rnd = random(seed);
      const dirs = ["", "a", "a/b", "c", "c/d/e"];
      const names = ["f1", "f2", "x.txt", "run.sh"];
      const somePath = () => {
        const dir = rnd.pick(dirs);
        return dir === "" ? rnd.pick(names) : `${dir}/${rnd.pick(names)}`;
      };
      const content = () => {
        const size = rnd.pick([0, 1, 100, 4096, 20_000, 0, 50]);
        return Buffer.from(Array.from({ length: size }, () => 97 + rnd.int(26)));
      };
      const entries = (root: string) =>
        Object.entries(ofClient(root)).map(([rel, seen]) => ({ rel, ...seen }));
      let stamp = 1_700_000_000;
      const edits: Record<string, () => string[] | undefined> = {
        // Each returns the paths whose content changed (may be sent), or undefined when it did nothing.
        write: () => {
          const rel = somePath();
          const abs = path.join(client, rel);
          rmSync(abs, { recursive: true, force: true });
          mkdirSync(path.dirname(abs), { recursive: true });
          if (lstatSync(path.dirname(abs)).isSymbolicLink()) return undefined;
          writeFileSync(abs, content());
          return [rel];
        },
        touch: () => {
          const file = rnd.pick(entries(client).filter((e) => e.type === "file"));
          if (!file) return undefined;
          stamp += 17.25;
          utimesSync(path.join(client, file.rel), stamp, stamp);
          return [];
        },
        chmod: () => {
          const entry = rnd.pick(entries(client).filter((e) => e.type !== "symlink"));
          if (!entry) return undefined;
          chmodSync(
            path.join(client, entry.rel),
            entry.type === "dir" ? rnd.pick([0o755, 0o700, 0o775]) : rnd.pick([0o644, 0o755, 0o600, 0o4755]),
          );
          return [];
        },
        remove: () => {
          const entry = rnd.pick(entries(client));
          if (!entry) return undefined;
          rmSync(path.join(client, entry.rel), { recursive: true, force: true });
          return [];
        },
        symlink: () => {
          const rel = somePath();
          const abs = path.join(client, rel);
          rmSync(abs, { recursive: true, force: true });
          mkdirSync(path.dirname(abs), { recursive: true });
          symlinkSync(rnd.pick(["f1", "../x.txt", "/etc/passwd", "a/b"]), abs);
          return [];
        },
        fileToDir: () => {
          const file = rnd.pick(entries(client).filter((e) => e.type === "file"));
          if (!file) return undefined;
          const abs = path.join(client, file.rel);
          rmSync(abs);
          mkdirSync(abs);
          writeFileSync(path.join(abs, "inner"), content());
          return [`${file.rel}/inner`];
        },
        // The worker's copy changed behind the sync's back: each must be undone by the next sync.
        tamperMode: () => {
          const file = rnd.pick(entries(kept.tree).filter((e) => e.type === "file"));
          if (!file) return undefined;
          chmodSync(path.join(kept.tree, file.rel), 0o666);
          return [];
        },
        tamperContent: () => {
          const file = rnd.pick(entries(kept.tree).filter((e) => e.type === "file" && (e.mode ?? 0) > 0));
          if (!file) return undefined;
          const abs = path.join(kept.tree, file.rel);
          const { atime, mtime } = lstatSync(abs);
          writeFileSync(abs, Buffer.alloc(lstatSync(abs).size, "z"));
          utimesSync(abs, atime, mtime);
          return [file.rel];
        },
        tamperDirIntoLink: () => {
          const dir = rnd.pick(entries(kept.tree).filter((e) => e.type === "dir"));
          if (!dir) return undefined;
          const abs = path.join(kept.tree, dir.rel);
          const below = entries(client).filter((e) => e.rel.startsWith(`${dir.rel}/`) && e.type === "file");
          rmSync(abs, { recursive: true });
          symlinkSync(outside, abs);
          return below.map((e) => e.rel);
        },
        // Behind the sync's back too, each of a kind only a directory's or a link's own change
        // time tells: what a shortcut that trusts an unchanged copy must not miss.
        tamperExtraEntry: () => {
          const dir = rnd.pick([{ rel: "" }, ...entries(kept.tree).filter((e) => e.type === "dir")]);
          writeFileSync(path.join(kept.tree, dir.rel, "planted"), "not the client's\n");
          return [];
        },
        tamperDirMode: () => {
          const dir = rnd.pick(entries(kept.tree).filter((e) => e.type === "dir"));
          if (!dir) return undefined;
          chmodSync(path.join(kept.tree, dir.rel), 0o711);
          return [];
        },
        tamperDirTime: () => {
          const dir = rnd.pick(entries(kept.tree).filter((e) => e.type === "dir"));
          if (!dir) return undefined;
          utimesSync(path.join(kept.tree, dir.rel), 1_000_000, 1_000_000);
          return [];
        },
        tamperLink: () => {
          const link = rnd.pick(entries(kept.tree).filter((e) => e.type === "symlink"));
          if (!link) return undefined;
          const abs = path.join(kept.tree, link.rel);
          rmSync(abs);
          symlinkSync(outside, abs);
          return [];
        },
        tamperRemove: () => {
          const file = rnd.pick(entries(kept.tree).filter((e) => e.type === "file"));
          if (!file) return undefined;
          rmSync(path.join(kept.tree, file.rel));
          return [file.rel];
        },
        // A sync with nothing changed anywhere.
        nothing: () => [],
      };
      const names_ = Object.keys(edits);
      for (let i = 0; i < 25; i++) edits.write!();
      await sync(client, kept);
      let sends = 0;
      for (let step = 0; step < 80; step++) {
        const done: string[] = [];
        const changed = new Set<string>();
        for (let n = 1 + rnd.int(3); n > 0; n--) {
          const name = rnd.pick(names_);
          const touched = edits[name]!();
          if (touched === undefined) continue;
          done.push(name);
          for (const rel of touched) changed.add(rel);
        }
        const sent = await sync(client, kept);
        sends += sent.length;
        const fresh = new SyncedContext(path.join(work, `fresh-${step}`));
        await sync(client, fresh);
        const want = ofClient(client);
        expect(ofCopy(kept.tree), `step ${step} (${done.join(", ")}): the kept copy`).toEqual(want);
        expect(ofCopy(fresh.tree), `step ${step}: a fresh copy`).toEqual(want);
        // Only what changed travels: an untouched file, a touched or chmod'ed one, is never sent.
        expect(
          sent.filter((rel) => !changed.has(rel)),
          `step ${step} (${done.join(", ")})`,
        ).toEqual([]);
        await fresh.remove();
      }
      expect(sends).toBeGreaterThan(20);
      expect(readFileSync(path.join(outside, "secret"), "utf8")).toBe("untouched\n");
      expect(readdirSync(outside)).toEqual(["secret"]);
      expect(existsSync(kept.tree)).toBe(true);
    },
    120_000,
  );
});
