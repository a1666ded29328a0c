/**
 * `type=tar`: the final filesystem (layers applied: whiteouts gone, hard links kept) as one tar, to
 * a file or to standard output. Owners, modes and times are the layers' own, so the tar is the same
 * whoever exports it; extended attributes travel as PAX `SCHILY.xattr` records.
 */
import { Header } from "tar";
import {
  encodeTarHeader,
  TAR_END,
  type TarEntry,
  TarSizeError,
  tarEntry,
  tarPadding,
} from "../oci/archive/tar.js";
import { withAttestationFiles } from "./attestations.js";
import { writeBytesTo } from "./destination.js";
import type { Exporter } from "./exporter.js";
import { type FsEntry, flattenLayers } from "./filesystem.js";

export const tarExporter: Exporter = async (job) => {
  const entries = withAttestationFiles(
    flattenLayers(job.store.content, job.result.layers, job.flattenOptions()),
    job.attestations,
    job.warn,
  );
  await writeBytesTo(filesystemTar(entries), job.request.dest ?? "-", "type=tar", job.destinationOptions());
  return undefined;
};

/** The tar bytes of a stream of filesystem entries. */
export async function* filesystemTar(entries: AsyncIterable<FsEntry>): AsyncGenerator<Buffer> {
  for await (const entry of entries) {
    const header: TarEntry = {
      path: entry.type === "Directory" ? `${entry.path}/` : entry.path,
      type: entry.type,
      mode: entry.mode,
      uid: entry.uid,
      gid: entry.gid,
      size: entry.type === "File" ? entry.size : 0,
      mtime: entry.mtime,
      ...(entry.linkpath !== undefined ? { linkpath: entry.linkpath } : {}),
      ...(entry.devmaj !== undefined ? { devmaj: entry.devmaj, devmin: entry.devmin ?? 0 } : {}),
    };
    if (entry.xattrs.size === 0) {
      yield* tarEntry(header, entry.body);
      continue;
    }
    yield headerWithXattrs(header, entry.xattrs);
    if (entry.type !== "File") continue;
    let written = 0;
    for await (const chunk of entry.body ?? []) {
      written += chunk.length;
      if (written > entry.size) break;
      yield chunk;
    }
    if (written !== entry.size) throw new TarSizeError(entry.path, entry.size, written);
    yield tarPadding(entry.size);
  }
  yield TAR_END;
}

/**
 * A PAX extended header carrying the entry's extended attributes (and its path, link target and
 * size, which the ustar block may not hold), then the ustar block.
 */
function headerWithXattrs(entry: TarEntry, xattrs: Map<string, Buffer>): Buffer {
  const records: Buffer[] = [
    paxRecord("path", Buffer.from(entry.path)),
    ...(entry.linkpath !== undefined ? [paxRecord("linkpath", Buffer.from(entry.linkpath))] : []),
    paxRecord("size", Buffer.from(String(entry.size))),
    ...[...xattrs]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, value]) => paxRecord(`SCHILY.xattr.${name}`, value)),
  ];
  const body = Buffer.concat(records);
  const paxHeader = new Header({
    path: "PaxHeader",
    type: "ExtendedHeader",
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: new Date(0),
  });
  paxHeader.encode();
  const padding = Buffer.alloc((512 - (body.length % 512)) % 512);
  // encodeTarHeader may add its own PAX block for a long path: the ustar block is always its last 512 bytes.
  const ustar = encodeTarHeader(entry).subarray(-512);
  return Buffer.concat([paxHeader.block!, body, padding, ustar]);
}

/** `<length> <key>=<value>\n`, the length counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.byteLength(` ${key}=`) + value.length + 1;
  let length = rest + String(rest).length;
  if (String(length).length !== String(rest).length) length = rest + String(length).length;
  return Buffer.concat([Buffer.from(`${length} ${key}=`), value, Buffer.from("\n")]);
}
