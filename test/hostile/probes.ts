/**
 * Tools for the hostile suite's sandbox and secrets cases.
 *
 * - **Probes**: a shell script that runs many attacks in one container and prints one line per
 *   attack (its name, exit code and output), so that one build or one `tbuild run` gives every
 *   test case its own result. Busybox's applets cannot make every system call an attacker would
 *   (keyctl, bpf, ptrace, open_by_handle_at...): the host's own perl is copied into the image with
 *   the libraries it loads, and its `syscall` builtin (no module needed) makes them. Nothing is
 *   compiled.
 * - **Leak search**: every file under some directories, and every file inside the gzip, zstd and
 *   tar data they hold (layer blobs, archives of archives), searched for a secret as raw bytes, in
 *   hex and in base64.
 */
import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { gunzipSync, zstdDecompressSync } from "node:zlib";

/**
 * Linux x86_64 system call numbers of the calls the probes make. Other architectures number them
 * differently: the probes refuse to guess.
 */
const X86_64_SYSCALLS = {
  acct: 163,
  add_key: 248,
  bpf: 321,
  clock_settime: 227,
  delete_module: 176,
  finit_module: 313,
  fsopen: 430,
  init_module: 175,
  iopl: 172,
  kexec_load: 246,
  keyctl: 250,
  mount: 165,
  open_by_handle_at: 304,
  open_tree: 428,
  perf_event_open: 298,
  pivot_root: 155,
  ptrace: 101,
  reboot: 169,
  request_key: 249,
  setns: 308,
  settimeofday: 164,
  swapon: 167,
  syslog: 103,
  umount2: 166,
  unshare: 272,
  userfaultfd: 323,
} as const;

export type SyscallName = keyof typeof X86_64_SYSCALLS;

export function syscallNumber(name: SyscallName): number {
  if (process.arch !== "x64") {
    throw new Error(`the sandbox probes know x86_64's system call numbers only, not ${process.arch}'s`);
  }
  return X86_64_SYSCALLS[name];
}

/**
 * `perl /probe/syscall.pl NR ARG...` makes system call NR and prints `ok RESULT` or `errno N TEXT`.
 * An argument is a number, `s:TEXT` (a pointer to the text), `z:N` (to N zero bytes) or `b:HEX`
 * (to those bytes).
 */
const SYSCALL_PL = `my ($nr, @args) = @ARGV;
my @a = map { /^s:(.*)$/s ? "$1" : /^z:(\\d+)$/ ? ("\\0" x $1) : /^b:([0-9a-f]*)$/ ? pack("H*", $1) : 0 + $_ } @args;
my $r = syscall(0 + $nr, @a);
if ($r == -1) { printf "errno %d %s\\n", 0 + $!, $!; exit 1 }
print "ok $r\\n";
`;

/**
 * The classic chroot escape: chroot into a subdirectory without entering it, climb out with "..",
 * and chroot to where the climb ended. Prints what "/" then holds, and whether the host path given
 * as the argument is reachable from there.
 */
const BREAKOUT_PL = `my $canary = shift;
mkdir "/tmp/jail";
chroot("/tmp/jail") or die "chroot: $!\\n";
chdir("..") for 1 .. 64;
chroot(".") or die "chroot .: $!\\n";
opendir(my $dir, "/") or die "opendir: $!\\n";
print join(" ", sort grep { !/^\\.\\.?$/ } readdir($dir)), "\\n";
print((-e "$canary/secret") ? "canary reachable\\n" : "canary unreachable\\n");
`;

/**
 * Asks the ssh agent at $SSH_AUTH_SOCK for its identities (SSH2_AGENTC_REQUEST_IDENTITIES, with
 * perl's builtin socket calls) and prints `keys N`, then each public key blob in hex and its comment.
 */
const AGENT_PL = `socket(my $s, 1, 1, 0) or die "socket: $!\n";
connect($s, pack("S Z108", 1, $ENV{SSH_AUTH_SOCK})) or die "connect $ENV{SSH_AUTH_SOCK}: $!\n";
syswrite($s, pack("N C", 1, 11)) == 5 or die "write: $!\n";
my $buf = "";
sub want { my $n = shift; while (length($buf) < $n) { sysread($s, $buf, 65536, length($buf)) or die "read: $!\n" } }
want(4);
want(4 + unpack("N", $buf));
my ($type, $count) = unpack("x4 C N", $buf);
die "the agent answered $type\n" unless $type == 12;
print "keys $count\n";
my $at = 9;
for (1 .. $count) {
  my $blob = unpack("N/a", substr($buf, $at)); $at += 4 + length($blob);
  my $comment = unpack("N/a", substr($buf, $at)); $at += 4 + length($comment);
  print unpack("H*", $blob), " $comment\n";
}
`;

/**
 * Copies the host's perl, the libraries it loads (at the paths its loader looks for them) and the
 * probe scripts into `dir`, laid out as an image's root: `COPY dir/ /` gives a busybox image
 * `/usr/bin/perl`, `/probe/syscall.pl`, `/probe/breakout.pl` and `/probe/agent.pl`.
 */
export function addProbeKit(dir: string): void {
  const libraries = execFileSync("ldd", ["/usr/bin/perl"], { encoding: "utf8" })
    .split("\n")
    .map((line) => /(\/\S+)/.exec(line.replace(/^.*=>/, ""))?.[1])
    .filter((file): file is string => file !== undefined);
  for (const file of ["/usr/bin/perl", ...libraries]) {
    const target = path.join(dir, file);
    mkdirSync(path.dirname(target), { recursive: true });
    copyFileSync(file, target);
  }
  mkdirSync(path.join(dir, "probe"), { recursive: true });
  writeFileSync(path.join(dir, "probe", "syscall.pl"), SYSCALL_PL);
  writeFileSync(path.join(dir, "probe", "breakout.pl"), BREAKOUT_PL);
  writeFileSync(path.join(dir, "probe", "agent.pl"), AGENT_PL);
  execFileSync("chmod", ["-R", "a+rX", dir]);
}

/** A shell command line for the probe script that makes system call `name` with `args`. */
export function syscallProbe(name: SyscallName, args: (string | number)[]): string {
  return ["perl", "/probe/syscall.pl", syscallNumber(name), ...args].join(" ");
}

const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/**
 * A shell script that runs each probe (`sh -c SCRIPT`) and prints `NAME<TAB>EXIT<TAB>OUTPUT`, the
 * output's stdout and stderr together, its line breaks as \x1e (so each probe is one line).
 */
export function probeScript(probes: Record<string, string>): string {
  const lines = [
    "probe() {",
    '  name=$1; out=$(sh -c "$2" 2>&1); code=$?',
    "  printf '%s\\t%s\\t' \"$name\" \"$code\"; printf '%s' \"$out\" | tr '\\n\\t' '\\036 '; printf '\\n'",
    "}",
  ];
  for (const [name, script] of Object.entries(probes)) {
    if (/[\t\n]/.test(name)) throw new Error(`a probe's name has a tab or a line break: ${name}`);
    lines.push(`probe ${quote(name)} ${quote(script)}`);
  }
  return `${lines.join("\n")}\n`;
}

export interface ProbeResult {
  exitCode: number;
  output: string;
}

/** The results `probeScript` printed, by probe name. */
export function parseProbeResults(text: string): Record<string, ProbeResult> {
  const results: Record<string, ProbeResult> = {};
  for (const line of text.split("\n")) {
    const match = /^([^\t]+)\t(\d+)\t(.*)$/.exec(line);
    if (match)
      results[match[1]!] = { exitCode: Number(match[2]), output: match[3]!.replaceAll("\x1e", "\n") };
  }
  return results;
}

/**
 * The ways a secret could be written down: as it is, in hex, and in base64 at each of the three
 * alignments it can start at inside a longer base64 text (the characters that depend on the secret
 * alone).
 */
export function secretForms(secret: string | Buffer): Buffer[] {
  const bytes = Buffer.from(secret);
  const forms = [bytes, Buffer.from(bytes.toString("hex"))];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString("base64");
    // Character i holds bits 6i to 6i+6: those within the secret's bytes depend on it alone.
    forms.push(
      Buffer.from(encoded.slice(Math.ceil((shift * 4) / 3), Math.floor(((shift + bytes.length) * 4) / 3))),
    );
  }
  return forms;
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** The entries of a tar archive (ustar or GNU), by name; undefined when `data` is not one. */
function tarEntries(data: Buffer): [string, Buffer][] | undefined {
  if (data.length < 512 || data.subarray(257, 262).toString("latin1") !== "ustar") return undefined;
  const entries: [string, Buffer][] = [];
  let offset = 0;
  while (offset + 512 <= data.length) {
    const header = data.subarray(offset, offset + 512);
    if (header.every((byte) => byte === 0)) break;
    const name = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    const size = Number.parseInt(
      header.subarray(124, 136).toString("latin1").replace(/\0.*$/s, "").trim() || "0",
      8,
    );
    entries.push([name, data.subarray(offset + 512, offset + 512 + size)]);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

function searchData(data: Buffer, where: string, forms: Buffer[], found: string[], depth: number): void {
  if (forms.some((form) => data.includes(form))) found.push(where);
  if (depth > 4) return;
  let unpacked: Buffer | undefined;
  try {
    if (data.subarray(0, 2).equals(GZIP_MAGIC)) unpacked = gunzipSync(data);
    else if (data.subarray(0, 4).equals(ZSTD_MAGIC)) unpacked = zstdDecompressSync(data);
  } catch {
    // Not really compressed data: the raw bytes were searched.
  }
  if (unpacked) searchData(unpacked, `${where} (decompressed)`, forms, found, depth + 1);
  for (const [name, content] of tarEntries(data) ?? []) {
    searchData(content, `${where}:${name}`, forms, found, depth + 1);
  }
}

/**
 * Every place under `roots` (files and directories, walked without following links) that holds
 * one of `forms`: a file, or a file inside an archive or compressed stream a file holds.
 */
export function placesHolding(roots: string[], forms: Buffer[]): string[] {
  const found: string[] = [];
  const walk = (file: string) => {
    const info = lstatSync(file, { throwIfNoEntry: false });
    if (!info) return;
    if (info.isDirectory()) {
      for (const name of readdirSync(file)) walk(path.join(file, name));
    } else if (info.isFile()) {
      searchData(readFileSync(file), file, forms, found, 0);
    } else if (info.isSymbolicLink()) {
      searchData(Buffer.from(readlinkSync(file)), `${file} (its target)`, forms, found, 5);
    }
  };
  for (const root of roots) walk(root);
  return found;
}
