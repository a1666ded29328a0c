/**
 * Hostile layers: tars that try to write outside the root they unpack into (`..`, absolute paths,
 * a symlink then a file through it, hard links out of the layer or to a symlink), devices,
 * whiteouts of `..`, opaque markers in odd places, very many entries, names longer than PATH_MAX,
 * and blobs that are not what they claim (gzip cut short, a plain tar typed gzip, a digest that does
 * not match). Each image comes in through `tbuild load` as an OCI archive over busybox, and is then
 * run. Each case ends in one line of error, or with its entry confined inside the image's root;
 * the canary outside is untouched and the store usable either way.
 */
import { lstatSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type Canary, hostileWorld, MODES, type Mode } from "./harness.js";
import {
  busyboxLayer,
  type EntrySpec,
  type ImageParts,
  type LayerFile,
  ociArchive,
  writeBytesBlob,
  writeLayer,
} from "./layer-images.js";

const world = hostileWorld();
let dir = "";
let base: LayerFile;

beforeAll(async () => {
  dir = world.dir("layers");
  base = await busyboxLayer(dir);
}, 120_000);

let counter = 0;
/**
 * An OCI archive of busybox under a layer of `entries` (made by `make` when given), named `name`;
 * with `lower`, a layer of those entries between busybox and it.
 */
async function archiveOf(
  name: string,
  entries: EntrySpec[],
  make?: (layer: LayerFile) => ImageParts,
  lower?: EntrySpec[],
) {
  const here = path.join(dir, `image-${++counter}`);
  const layer = await writeLayer(path.join(dir, `layer-${counter}.tar.gz`), entries);
  const below = lower ? [await writeLayer(path.join(dir, `layer-${counter}-lower.tar.gz`), lower)] : [];
  return ociArchive(here, name, make ? make(layer) : { layers: [base, ...below, layer] });
}

type Outcome =
  /** `tbuild load` refuses the archive: its one line says this. */
  | { load: string }
  /** Loaded, but running it is refused at unpacking: its one line says this. */
  | { unpack: string }
  /** Loaded and run: `sh -c script` prints this (the entry stayed inside the root). */
  | { script: string; prints: string | ((mode: Mode) => string) };

interface LayerCase {
  name: string;
  entries: (canary: Canary) => EntrySpec[];
  /** A layer between busybox and the case's own. */
  lower?: (canary: Canary) => EntrySpec[];
  /** `FROM` the image, `-o type=local`: what the exported tree must hold (path → file content, or "dir"). */
  exported?: Record<string, string>;
  make?: (layer: LayerFile) => ImageParts;
  outcome: Outcome;
  /**
   * Refused from the entry's own path or link target (a `..`, an absolute path, a whiteout of
   * `..`) before anything of it is written: the same pure check as root and rootless, so run as
   * root only.
   */
  refusedByPath?: true;
}

/**
 * A refused load stops while it reads and hashes the archive's blobs, before anything is unpacked:
 * the same code as root and rootless, so those cases run as root only.
 */
const refusedAtLoad = (layerCase: LayerCase) => "load" in layerCase.outcome;
const rootOnly = (layerCase: LayerCase) => refusedAtLoad(layerCase) || layerCase.refusedByPath === true;

const cases: LayerCase[] = [
  {
    name: "an entry with ../ in its path",
    entries: () => [{ path: "../../../../../../tmp/escaped", content: "x" }],
    outcome: { unpack: "has a '..' component, which would leave the layer" },
    refusedByPath: true,
  },
  {
    name: "an entry with an absolute path into the canary",
    entries: (canary) => [{ path: path.join(canary.dir, "secret"), content: "overwritten" }],
    outcome: { unpack: "has an absolute path" },
    refusedByPath: true,
  },
  {
    name: "a symlink to /etc, then a file through it",
    entries: () => [
      { path: "a", type: "SymbolicLink", linkpath: "/etc" },
      { path: "a/passwd", content: "root::0:0::/:/bin/sh\n" },
    ],
    outcome: { unpack: 'goes through "a", a symbolic link the layer planted' },
  },
  {
    name: "a symlink to the canary, then a file through it",
    entries: (canary) => [
      { path: "c", type: "SymbolicLink", linkpath: canary.dir },
      { path: "c/secret", content: "overwritten" },
    ],
    outcome: { unpack: 'goes through "c", a symbolic link the layer planted' },
  },
  {
    name: "a symlink to the canary in one layer, a file through it in the next",
    lower: (canary) => [{ path: "lib", type: "SymbolicLink", linkpath: canary.dir }],
    entries: () => [{ path: "lib/secret", content: "inside\n" }],
    // The layer's own directory replaces the link, as `docker run` shows it; nothing goes through it.
    outcome: { script: "ls -ld /lib | cut -c1; ls /lib; cat /lib/secret", prints: "d\nsecret\ninside\n" },
    exported: { lib: "dir", "lib/secret": "inside\n" },
  },
  {
    name: "a relative symlink up and out in one layer, a directory through it in the next",
    lower: () => [{ path: "up", type: "SymbolicLink", linkpath: "../../../../../../../../tmp" }],
    entries: () => [
      { path: "up/planted", type: "Directory" },
      { path: "up/planted/file", content: "inside\n" },
    ],
    outcome: { script: "ls -ld /up | cut -c1; cat /up/planted/file; ls /tmp", prints: "d\ninside\n" },
    exported: { up: "dir", "up/planted": "dir", "up/planted/file": "inside\n" },
  },
  {
    name: "a hard link to an absolute path outside",
    entries: (canary) => [{ path: "h", type: "Link", linkpath: path.join(canary.dir, "secret") }],
    outcome: { unpack: "outside the layer" },
    refusedByPath: true,
  },
  {
    name: "a hard link up and out with ..",
    entries: () => [{ path: "h", type: "Link", linkpath: "../../../../etc/shadow" }],
    outcome: { unpack: "outside the layer" },
    refusedByPath: true,
  },
  {
    name: "a hard link through a planted symlink",
    entries: (canary) => [
      { path: "s", type: "SymbolicLink", linkpath: canary.dir },
      { path: "h", type: "Link", linkpath: "s/secret" },
    ],
    outcome: { unpack: 'is a hard link through "s", a symbolic link the layer planted' },
  },
  {
    name: "a hard link to a symlink that points at the canary",
    entries: (canary) => [
      { path: "s", type: "SymbolicLink", linkpath: path.join(canary.dir, "secret") },
      { path: "h", type: "Link", linkpath: "s" },
    ],
    // The link is to the symlink itself: inside the root, its target does not exist.
    outcome: { script: "readlink /h; cat /h 2>/dev/null || echo unreadable", prints: "" },
  },
  {
    name: "a whiteout of ..",
    entries: () => [{ path: "etc/.wh..", content: "" }],
    outcome: { unpack: "is a whiteout of no file, or of a parent directory" },
    refusedByPath: true,
  },
  {
    name: "an opaque marker in a directory of the image",
    entries: () => [
      { path: "etc/.wh..wh..opq", content: "" },
      { path: "etc/only", content: "only\n" },
    ],
    // /etc/hostname, hosts and resolv.conf are the runtime's own mounts, on top of the image.
    outcome: { script: "ls /etc | grep -vx -e hostname -e hosts -e resolv.conf", prints: "only\n" },
  },
  {
    name: "an opaque marker through a planted symlink",
    entries: () => [
      { path: "t", type: "SymbolicLink", linkpath: "/tmp" },
      { path: "t/.wh..wh..opq", content: "" },
    ],
    outcome: { unpack: 'goes through "t", a symbolic link the layer planted' },
  },
  {
    name: "device nodes",
    entries: () => [
      { path: "disk", type: "BlockDevice", devmaj: 8, devmin: 0 },
      { path: "mem", type: "CharacterDevice", devmaj: 1, devmin: 1 },
    ],
    // As root the nodes exist, and the sandbox's device rules forbid opening them; rootless they are skipped.
    outcome: {
      script:
        "for d in /disk /mem; do if [ -e $d ]; then head -c 1 $d >/dev/null 2>&1 && echo $d-read || echo $d-denied; else echo $d-absent; fi; done",
      prints: (mode) => (mode === "root" ? "/disk-denied\n/mem-denied\n" : "/disk-absent\n/mem-absent\n"),
    },
  },
  {
    name: "20,000 entries",
    entries: () => Array.from({ length: 20_000 }, (_, i) => ({ path: `many/f${i}`, content: "" })),
    outcome: { script: "ls /many | wc -l", prints: "20000\n" },
  },
  {
    name: "a path longer than PATH_MAX",
    entries: () => [{ path: `${"d/".repeat(2100)}f`, content: "deep" }],
    outcome: { unpack: "is too long for the file system" },
  },
  {
    name: "a name longer than NAME_MAX",
    entries: () => [{ path: "n".repeat(300), content: "long" }],
    outcome: { unpack: "is too long for the file system" },
  },
  {
    name: "a gzip stream cut short",
    entries: () => [{ path: "big", content: "y".repeat(300_000) }],
    make: (layer) => {
      const cut = writeBytesBlob(`${layer.file}.cut`, readFileSync(layer.file).subarray(0, 300));
      return { layers: [base, { ...layer, ...cut }] };
    },
    outcome: { load: "ends in the middle of its gzip stream; nothing was loaded" },
  },
  {
    name: "a plain tar typed gzip",
    entries: () => [{ path: "plain", content: "p" }],
    make: (layer) => {
      const tar = Buffer.alloc(1536);
      tar.write("plain", 0);
      const blob = writeBytesBlob(`${layer.file}.tar`, tar);
      return { layers: [base, { ...layer, ...blob }] };
    },
    outcome: { load: "is typed application/vnd.oci.image.layer.v1.tar+gzip but is not gzip data" },
  },
  {
    name: "a layer whose diff_id is not its tar's",
    entries: () => [{ path: "x", content: "x" }],
    make: (layer) => ({ layers: [base, layer], diffIds: [base.diffId, base.diffId] }),
    outcome: { load: "uncompresses to sha256:" },
  },
  {
    name: "a blob whose bytes do not match its digest",
    entries: () => [{ path: "x", content: "x" }],
    make: (layer) => {
      writeFileSync(layer.file, Buffer.concat([readFileSync(layer.file), Buffer.from("tail")]));
      return { layers: [base, layer] };
    },
    outcome: { load: "sha256" },
  },
];

describe.each(MODES)("hostile layers (%s)", (mode) => {
  it.each(cases.filter((layerCase) => mode === "root" || !rootOnly(layerCase)))(
    "$name",
    async (layerCase) => {
      const store = world.store(mode);
      const canary = world.canary(mode);
      const name = `hostile-${++counter}:1`;
      const archive = await archiveOf(
        name,
        layerCase.entries(canary),
        layerCase.make,
        layerCase.lower?.(canary),
      );
      const load = world.tbuild(mode, store, ["load", "-i", archive]);
      const outputs: string[] = [load.stdout, load.stderr];
      const { outcome } = layerCase;
      if ("load" in outcome) {
        expect(load.status, load.stderr).toBe(1);
        expect(load.stderr).toContain(outcome.load);
        expect(load.stderr.trim().split("\n")).toHaveLength(1);
        expect(world.tbuild(mode, store, ["images"]).stdout).not.toContain(name.split(":")[0]);
      } else {
        expect(load.status, load.stderr).toBe(0);
        const script = "script" in outcome ? outcome.script : "true";
        const ran = world.tbuild(mode, store, ["run", "--rm", name, "sh", "-c", script]);
        outputs.push(ran.stdout, ran.stderr);
        if ("unpack" in outcome) {
          expect(ran.status, ran.stderr).toBe(1);
          expect(ran.stderr).toContain(outcome.unpack);
          expect(ran.stderr).toMatch(/layer sha256:[a-f0-9]{64}/);
          expect(ran.stderr.trim().split("\n")).toHaveLength(1);
        } else {
          expect(ran.status, ran.stderr).toBe(0);
          const prints = typeof outcome.prints === "function" ? outcome.prints(mode) : outcome.prints;
          if (prints !== "") expect(ran.stdout).toBe(prints);
          else expect(ran.stdout).toMatch(/^\S*secret\nunreadable\n$/);
        }
      }
      if (layerCase.exported) {
        // What the exporters write is what ran: the same tree, nothing written through the link.
        const dest = world.dir("exported", mode);
        const ctx = world.context({ Dockerfile: `FROM ${name}\n` }, mode);
        const built = world.tbuild(mode, store, [
          "build",
          "--progress=plain",
          "-o",
          `type=local,dest=${dest}`,
          ctx,
        ]);
        outputs.push(built.stdout, built.stderr);
        expect(built.status, built.stderr).toBe(0);
        for (const [file, content] of Object.entries(layerCase.exported)) {
          const stat = lstatSync(path.join(dest, file));
          if (content === "dir") expect(stat.isDirectory(), file).toBe(true);
          else expect(readFileSync(path.join(dest, file), "utf8")).toBe(content);
        }
      }
      canary.expectUntouched(...outputs);
      world.expectStoreUsable(mode, store);
    },
    180_000,
  );
});
