/**
 * Host keys checked as OpenSSH's `ssh` checks them (`StrictHostKeyChecking yes`, hostfile.c): the
 * lines of `known_hosts` files name hosts by comma-separated patterns (`*` and `?` wildcards, `!`
 * to exclude), as `[host]:port` when the port is not 22, or hashed (`|1|salt|HMAC-SHA1(salt, name)`,
 * what `ssh-keygen -H` and `HashKnownHosts` write). A key found for the host is trusted; a
 * different key of the same type is a changed key (someone may be in the middle); no key of that
 * type is an unknown host. tbuild never adds lines: an unknown host is refused with the key's
 * fingerprint, spelled as `ssh` prints it, and the command that trusts it. `@cert-authority` lines
 * are skipped (host certificates are not supported); a key listed `@revoked` is refused.
 */
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { TbuildError } from "../../errors/index.js";

/** One key line of a known_hosts file. */
export interface KnownHostLine {
  file: string;
  /** 1-based. */
  line: number;
  marker?: "revoked" | "cert-authority";
  /** The host field as written: patterns, or one `|1|…` hash. */
  hosts: string;
  keyType: string;
  key: Buffer;
}

/** What a known_hosts check found for a host's key. */
export type HostKeyVerdict =
  | { status: "known"; line: KnownHostLine }
  | { status: "unknown"; otherTypes: string[] }
  | { status: "changed"; line: KnownHostLine }
  | { status: "revoked"; line: KnownHostLine };

/** The name known_hosts files use for a host: `host`, or `[host]:port` off port 22. */
export function knownHostsName(host: string, port: number): string {
  const name = host.toLowerCase();
  return port === 22 ? name : `[${name}]:${port}`;
}

/** The lines of `files` (missing files hold none). */
export function readKnownHosts(files: readonly string[]): KnownHostLine[] {
  const lines: KnownHostLine[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new TbuildError(
        "E_KNOWN_HOSTS",
        `cannot read known_hosts file ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): make it readable, or name another`,
        { cause: err },
      );
    }
    lines.push(...parseKnownHosts(text, file));
  }
  return lines;
}

/** Parses known_hosts text; lines that are not key lines (comments, garbage) are skipped, as ssh does. */
export function parseKnownHosts(text: string, file: string): KnownHostLine[] {
  const lines: KnownHostLine[] = [];
  text.split("\n").forEach((raw, index) => {
    const fields = raw.trim().split(/\s+/);
    if (fields[0] === undefined || fields[0] === "" || fields[0].startsWith("#")) return;
    let marker: KnownHostLine["marker"];
    if (fields[0].startsWith("@")) {
      const name = fields.shift()!.slice(1);
      if (name !== "revoked" && name !== "cert-authority") return;
      marker = name;
    }
    const [hosts, keyType, base64] = fields;
    if (!hosts || !keyType || !base64 || !/^[A-Za-z0-9+/]+=*$/.test(base64)) return;
    const key = Buffer.from(base64, "base64");
    if (keyTypeOfBlob(key) !== keyType) return;
    lines.push({ file, line: index + 1, ...(marker ? { marker } : {}), hosts, keyType, key });
  });
  return lines;
}

/** Whether the host field of a line names `name` (a `knownHostsName`). */
export function hostFieldMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith("|1|")) {
    const [, , salt, hash] = hosts.split("|");
    if (!salt || !hash) return false;
    const expected = Buffer.from(hash, "base64");
    const actual = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest();
    return expected.length === actual.length && expected.equals(actual);
  }
  // As match_hostname: a negated pattern that matches wins over every positive one.
  let matched = false;
  for (const pattern of hosts.toLowerCase().split(",")) {
    const negated = pattern.startsWith("!");
    if (!globMatches(negated ? pattern.slice(1) : pattern, name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

function globMatches(pattern: string, text: string): boolean {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${source}$`, "s").test(text);
}

/** The family a key type belongs to, as ssh compares them (ECDSA curves are one type). */
function keyFamily(keyType: string): string {
  if (keyType.startsWith("ecdsa-sha2-")) return "ecdsa";
  return keyType;
}

/** Checks the key `host:port` presented against known_hosts lines. */
export function checkHostKey(
  lines: readonly KnownHostLine[],
  host: string,
  port: number,
  key: Buffer,
): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const type = keyTypeOfBlob(key);
  const forHost = lines.filter((l) => l.marker !== "cert-authority" && hostFieldMatches(l.hosts, name));
  const revoked = forHost.find((l) => l.marker === "revoked" && l.key.equals(key));
  if (revoked) return { status: "revoked", line: revoked };
  const plain = forHost.filter((l) => l.marker === undefined);
  const known = plain.find((l) => l.key.equals(key));
  if (known) return { status: "known", line: known };
  const changed = plain.find((l) => type !== undefined && keyFamily(l.keyType) === keyFamily(type));
  if (changed) return { status: "changed", line: changed };
  return { status: "unknown", otherTypes: [...new Set(plain.map((l) => l.keyType))] };
}

/** The key types known for `host:port`, in file order: the host key algorithms to ask for first. */
export function knownKeyTypes(lines: readonly KnownHostLine[], host: string, port: number): string[] {
  const name = knownHostsName(host, port);
  return [
    ...new Set(
      lines.filter((l) => l.marker === undefined && hostFieldMatches(l.hosts, name)).map((l) => l.keyType),
    ),
  ];
}

/** The type a public key blob names (its first SSH string), e.g. `ssh-ed25519`. */
export function keyTypeOfBlob(key: Buffer): string | undefined {
  if (key.length < 4) return undefined;
  const length = key.readUInt32BE(0);
  if (length === 0 || length > 64 || key.length < 4 + length) return undefined;
  return key.subarray(4, 4 + length).toString("latin1");
}

/** A key's fingerprint as `ssh` prints it: `SHA256:` and base64 without padding. */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

/** How `ssh` names a key type in its messages: ED25519, ECDSA, RSA. */
export function keyTypeLabel(keyType: string | undefined): string {
  if (keyType === "ssh-ed25519") return "ED25519";
  if (keyType?.startsWith("ecdsa-sha2-")) return "ECDSA";
  if (keyType === "ssh-rsa") return "RSA";
  if (keyType === "ssh-dss") return "DSA";
  return keyType ?? "unknown";
}
