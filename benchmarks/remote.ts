/**
 * A build on a remote worker (`--worker ssh://…`) beside the tools a team would otherwise use to
 * get a tree onto a build host, over the same OpenSSH server: Debian's sshd on loopback (its own
 * host keys, letting in the unprivileged `tbuild-test` by key, so the worker builds rootless), with
 * a byte-counting TCP proxy in front that both tbuild and the peers go through. Runs alternate,
 * A B A B, RUNS pairs per case after one pair not counted; medians, the median of the pairs'
 * ratios, and where tbuild's time goes (from its rawjson events) are printed against the targets
 * of issue 14:
 *
 *   (1) first sync of the 2,000-file context of benchmarks/build.ts: ≤ 1.0× `tar -c . | ssh host
 *       tar -x -C DIR`. tbuild's time is from its start to the first event the worker sends after
 *       the sync (the build's first step starting; the worker's copy of the context is complete and
 *       recorded by then), connecting included as it is in the peer's; the whole build is shown too.
 *       Each pair runs on the project moved to a new path: both write into new directories.
 *   (2) after one file of it changed: ≤ 1.0× `rsync -a` of the same tree, in bytes sent (client to
 *       server, through the proxy, SSH's own bytes included for both) and in time (to the end of the
 *       sync, as in (1)).
 *   (3) a fully cached rebuild with `-t` (the image comes back to the client's store) on the
 *       worker: ≤ a local cached rebuild of the same project + 200 ms. Local is run twice: as root
 *       (the client's user here), and rootless as `tbuild-test` (the worker's user, so the same
 *       user-namespace start-up is on both sides); the target is judged against the rootless one.
 *
 * The Dockerfile is `FROM busybox` and `COPY . /app`. The OpenSSH client uses the same key and a
 * known_hosts file, and no config file (`-F none`); ssh, tar and rsync run with their defaults (no
 * compression). Each run starts on a synced disk.
 *
 *   node_modules/.bin/node benchmarks/remote.ts   (after `npm run build`; as root, for sshd)
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeProjectSources } from "./lib/build-bench.ts";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";
import { type RunningSshd, startSshd, startTcpProxy, type TcpProxy } from "./lib/test-helpers.ts";

const RUNS = Number(process.env.RUNS ?? 5);
const PROJECT_FILES = 2000;
const WORKER_USER = "tbuild-test";
const DOCKERFILE = "FROM busybox\nCOPY . /app\n";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-remote-"));

interface Timed {
  /** Start to exit. */
  ms: number;
  /** tbuild: start to `build.worker` (connected, the worker started and its handshake done). */
  connectedMs?: number;
  /** tbuild: start to the worker's first event after the sync. */
  syncMs?: number;
  /** tbuild: start to `build.completed` (what follows is the image coming back, and the end). */
  completedMs?: number;
  /** Bytes through the proxy, client to server and back. */
  up: number;
  down: number;
  stderr: string;
}

let proxy: TcpProxy | undefined;

/**
 * Runs a command without blocking this process (the proxy lives in it), timed from its start to
 * its exit, on a synced disk. With `watchSync`, its stderr is tbuild's rawjson progress: the
 * first event after `build.worker` marks the end of the sync.
 */
async function timed(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; watchSync?: boolean } = {},
): Promise<Timed> {
  spawnSync("sync");
  const before = { ...proxy!.bytes };
  const start = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - start) / 1e6;
  const child: ChildProcess = spawn(command, args, {
    env: options.env ?? process.env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  let partial = "";
  let connectedMs: number | undefined;
  let syncMs: number | undefined;
  let completedMs: number | undefined;
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
    if (!options.watchSync) return;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop()!;
    for (const line of lines) {
      let type: string | undefined;
      try {
        type = (JSON.parse(line) as { type?: string }).type;
      } catch {
        continue;
      }
      if (type === "build.worker") connectedMs = elapsed();
      else if (connectedMs !== undefined && syncMs === undefined) syncMs = elapsed();
      if (type === "build.completed") completedMs = elapsed();
    }
  });
  const [code, signal] = (await once(child, "close")) as [number | null, string | null];
  const ms = elapsed();
  if (code !== 0)
    throw new Error(`${command} ${args.join(" ")} failed (${code ?? signal}): ${stderr.slice(-2000)}`);
  if (options.watchSync && syncMs === undefined)
    throw new Error(`tbuild sent no event after the sync: ${stderr}`);
  return {
    ms,
    ...(connectedMs !== undefined ? { connectedMs } : {}),
    ...(syncMs !== undefined ? { syncMs } : {}),
    ...(completedMs !== undefined ? { completedMs } : {}),
    up: proxy!.bytes.up - before.up,
    down: proxy!.bytes.down - before.down,
    stderr,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

/** One case: medians and runs of each side, the median of the pairs' ratios, and whether it meets `target`. */
function ratioRow(
  name: string,
  unit: "ms" | "bytes",
  target: number,
  t: number[],
  peerName: string,
  p: number[],
) {
  const tm = median(t);
  const pm = median(p);
  // Pair by pair (the runs alternate), so that a machine whose speed drifts moves both sides.
  const ratio = median(t.map((x, i) => x / p[i]!));
  const show = (m: number, xs: number[]) =>
    unit === "ms"
      ? `median ${m.toFixed(0)} ms  (runs: ${fmt(xs)})`
      : `median ${kib(m)}  (runs: ${fmt(xs)} B)`;
  console.log(name);
  console.log(`  tbuild ${show(tm, t)}`);
  console.log(`  ${peerName} ${show(pm, p)}`);
  console.log(`  ratio ${ratio.toFixed(2)}× (target ≤ ${target}×: ${ratio <= target ? "met" : "NOT met"})`);
  return ratio <= target;
}

/** The 2,000-file project of benchmarks/build.ts, its Dockerfile `FROM busybox` + `COPY . /app`. */
function makeProject(dir: string): void {
  writeProjectSources(dir, PROJECT_FILES);
  writeFileSync(join(dir, "Dockerfile"), DOCKERFILE);
}

/** A store at `root` holding busybox (imported from Debian's busybox-static), owned by `owner`. */
function storeWithBusybox(root: string, rootfs: string, owner?: string): void {
  mkdirSync(root, { recursive: true });
  check(
    spawnSync(tbuild, ["import", rootfs, "busybox", "--change", 'CMD ["sh"]'], {
      env: { ...process.env, TBUILD_ROOT: root },
    }),
    "tbuild import",
  );
  if (owner) execFileSync("chown", ["-R", `${owner}:`, root]);
}

let sshd: RunningSshd | undefined;
try {
  if (process.getuid?.() !== 0) throw new Error("run this benchmark as root (it starts sshd)");
  chmodSync(work, 0o755);
  sshd = await startSshd({ user: WORKER_USER });
  proxy = await startTcpProxy({ port: sshd.port });
  const port = proxy.port;

  // The client: a HOME whose key and known_hosts both tbuild and OpenSSH's client use.
  const home = join(work, "home");
  mkdirSync(join(home, ".ssh"), { recursive: true, mode: 0o700 });
  const key = join(home, ".ssh", "id_ed25519");
  copyFileSync(sshd.clientKey, key);
  chmodSync(key, 0o600);
  const knownHosts = join(home, ".ssh", "known_hosts");
  writeFileSync(knownHosts, `${sshd.knownHostsLine("ed25519").replace(`]:${sshd.port} `, `]:${port} `)}\n`);
  const ssh = [
    "ssh",
    "-F",
    "none",
    "-p",
    String(port),
    "-i",
    key,
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "IdentitiesOnly=yes",
  ];
  const host = `${WORKER_USER}@127.0.0.1`;

  const rootfs = join(work, "rootfs");
  makeBusyboxRootfs(rootfs);
  // The worker's side: its store and the peers' target directories, the worker user's.
  const workerDir = join(work, "worker");
  const workerStore = join(workerDir, "store");
  storeWithBusybox(workerStore, rootfs);
  const peerDir = join(workerDir, "peer");
  mkdirSync(peerDir);
  execFileSync("chown", ["-R", `${WORKER_USER}:`, workerDir]);
  const localStore = join(work, "local");
  storeWithBusybox(localStore, rootfs);
  const localRootless = join(work, "local-rootless");
  const localRootlessStore = join(localRootless, "store");
  storeWithBusybox(localRootlessStore, rootfs);
  execFileSync("chown", ["-R", `${WORKER_USER}:`, localRootless]);

  const project = join(work, "project");
  makeProject(project);
  execFileSync("chmod", ["-R", "a+rX", project]);

  const clientEnv = {
    ...process.env,
    HOME: home,
    SSH_AUTH_SOCK: "",
    TBUILD_ROOT: join(work, "client"),
    TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${workerStore} ${tbuild} worker --stdio`,
  };
  const remoteBuild = (extra: string[] = [], context = project) =>
    timed(tbuild, ["build", "--progress=rawjson", "--worker", `ssh://${host}:${port}`, ...extra, context], {
      env: clientEnv,
      watchSync: true,
    });
  let peerRun = 0;
  const tarOver = (context: string) => {
    const target = join(peerDir, `tar-${peerRun++}`);
    return timed("sh", [
      "-c",
      `p=$1; shift; tar -c -C "$p" . | "$@" "mkdir ${target} && tar -x -C ${target}"`,
      "sh",
      context,
      ...ssh,
      host,
    ]);
  };
  console.log(
    `${spawnSync("ssh", ["-V"], { encoding: "utf8" }).stderr.trim()}, ${execFileSync("rsync", ["--version"], { encoding: "utf8" }).split("\n")[0]}`,
  );
  console.log(`${PROJECT_FILES}-file context; ${RUNS} alternating runs per case after one not counted\n`);

  // (1) first sync: each pair on the project moved to a new path, which the worker keeps a copy
  // of its own for, so that both write into new directories and nothing is deleted meanwhile
  // (removing the last copy first made this disk's next 2,000 creations slower still).
  const firstT: Timed[] = [];
  const firstP: Timed[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const moved = `${project}-${i}`;
    renameSync(project, moved);
    const t = await remoteBuild([], moved);
    const p = await tarOver(moved);
    renameSync(moved, project);
    if (i > 0) {
      firstT.push(t);
      firstP.push(p);
    }
  }

  // (2) one file changed: both peers hold the tree already; each run edits the same file anew.
  const rsyncTarget = join(peerDir, "rsync");
  const rsync = () => timed("rsync", ["-a", "-e", ssh.join(" "), `${project}/`, `${host}:${rsyncTarget}/`]);
  await remoteBuild();
  await rsync();
  const edited = join(project, "src", "module0", "file0.c");
  const changedT: Timed[] = [];
  const changedP: Timed[] = [];
  for (let i = 0; i <= RUNS; i++) {
    writeFileSync(edited, `/* edit ${i} */\nint f0(void) { return ${i}; }\n${"//".repeat(200)}\n`);
    const t = await remoteBuild();
    const p = await rsync();
    if (i > 0) {
      changedT.push(t);
      changedP.push(p);
    }
  }

  // (3) fully cached rebuilds, -t: remote, local as root, local rootless as the worker's user.
  const localBuild = () =>
    timed(tbuild, ["build", "--progress=plain", "-t", "bench/remote:latest", project], {
      env: { ...process.env, TBUILD_ROOT: localStore },
    });
  const localRootlessBuild = () =>
    timed("runuser", [
      "-u",
      WORKER_USER,
      "--",
      "env",
      `TBUILD_ROOT=${localRootlessStore}`,
      `HOME=${localRootless}`,
      tbuild,
      "build",
      "--progress=plain",
      "-t",
      "bench/remote:latest",
      project,
    ]);
  await remoteBuild(["-t", "bench/remote:latest"]);
  await localBuild();
  await localRootlessBuild();
  const cachedT: Timed[] = [];
  const cachedL: Timed[] = [];
  const cachedR: Timed[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const t = await remoteBuild(["-t", "bench/remote:latest"]);
    const l = await localBuild();
    const r = await localRootlessBuild();
    if (i > 0) {
      cachedT.push(t);
      cachedL.push(l);
      cachedR.push(r);
    }
  }

  const ms = (xs: Timed[]) => xs.map((x) => x.ms);
  const sync = (xs: Timed[]) => xs.map((x) => x.syncMs!);
  const up = (xs: Timed[]) => xs.map((x) => x.up);
  /** Where a remote build's time goes, medians of each phase's share. */
  const phases = (name: string, xs: Timed[]) => {
    const part = (f: (x: Timed) => number) => median(xs.map(f)).toFixed(0);
    console.log(
      `${name}: whole ${part((x) => x.ms)} ms = connecting, starting the worker, handshake ${part((x) => x.connectedMs!)} + sync ${part((x) => x.syncMs! - x.connectedMs!)} + build ${part((x) => x.completedMs! - x.syncMs!)} + the rest (image back, end) ${part((x) => x.ms - x.completedMs!)}`,
    );
  };
  phases("(1) tbuild, first sync", firstT);
  console.log(`    sent ${kib(median(up(firstT)))}; tar | ssh sent ${kib(median(up(firstP)))}`);
  phases("(2) tbuild, one file changed", changedT);
  console.log(
    `    received ${kib(median(changedT.map((x) => x.down)))}; rsync received ${kib(median(changedP.map((x) => x.down)))}`,
  );
  phases("(3) tbuild, fully cached, -t", cachedT);
  console.log("");
  const met = [
    ratioRow(
      `(1) first sync of the ${PROJECT_FILES}-file context`,
      "ms",
      1,
      sync(firstT),
      "tar | ssh tar -x",
      ms(firstP),
    ),
    ratioRow("(2) one file changed: bytes sent", "bytes", 1, up(changedT), "rsync -a", up(changedP)),
    ratioRow(
      "(2) one file changed: time to the end of the sync",
      "ms",
      1,
      sync(changedT),
      "rsync -a",
      ms(changedP),
    ),
  ];
  const remote = median(ms(cachedT));
  const local = median(ms(cachedL));
  const rootless = median(ms(cachedR));
  console.log("(3) fully cached rebuild, -t");
  console.log(`  remote          median ${remote.toFixed(0)} ms  (runs: ${fmt(ms(cachedT))})`);
  console.log(`  local, root     median ${local.toFixed(0)} ms  (runs: ${fmt(ms(cachedL))})`);
  console.log(`  local, rootless median ${rootless.toFixed(0)} ms  (runs: ${fmt(ms(cachedR))})`);
  // Pair by pair, as the ratios are.
  const over = median(cachedT.map((x, i) => x.ms - cachedR[i]!.ms));
  const overRoot = median(cachedT.map((x, i) => x.ms - cachedL[i]!.ms));
  console.log(
    `  remote − local rootless ${over.toFixed(0)} ms (target ≤ 200 ms: ${over <= 200 ? "met" : "NOT met"}); remote − local root ${overRoot.toFixed(0)} ms`,
  );
  met.push(over <= 200);
  process.exitCode = met.every(Boolean) ? 0 : 1;
} finally {
  await proxy?.stop();
  await sshd?.stop();
  rmSync(work, { recursive: true, force: true });
}
