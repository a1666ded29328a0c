/**
 * Builds running while `tbuild rmi`, `tbuild prune` and `tbuild prune --all` run on the same
 * store, over and over until the builds end. There is no daemon to order them: each command takes
 * the locks and leases it needs. Each build succeeds, or fails with one clear error line (never
 * an internal error, never an image that does not run); the removals do what they say; and
 * afterwards the store is usable and every image left in it runs. As root and rootless.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode } from "./harness.js";
import { exitOf, OutputLines } from "./processes.js";

const world = hostileWorld();

/**
 * A build of several steps whose image says which build made it. Its second step waits at a gate:
 * until `gate` (a URL on this machine: RUN steps share the host's network) answers, so that the
 * removals surely run while the build does.
 */
function dockerfile(name: string, gate: string): string {
  return [
    // The base rmi removes while the build runs: its own layer is in no other image.
    "FROM old:1",
    "RUN seq 1 30000 > /numbers",
    `RUN echo ${name}-begun && until wget -q -O /dev/null ${gate}; do sleep 0.1; done`,
    "COPY data.txt /data.txt",
    `RUN sort -rn /numbers | head -n 5 > /top && echo ${name} > /which`,
    `RUN cat /which /data.txt /old /top > /${name}.txt`,
    `CMD ["cat", "/${name}.txt"]`,
    "",
  ].join("\n");
}

/** What the image of build `name` prints when run. */
const expectedOutput = (name: string) => `${name}\ndata of ${name}\nold\n30000\n29999\n29998\n29997\n29996\n`;

function ok(mode: Mode, store: string, args: string[]): string {
  const result = world.tbuild(mode, store, args);
  expect(result.status, `tbuild ${args.join(" ")}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** A failure a user can act on: one `ERROR:` line at the end, not an internal error or a stack. */
function expectClearFailure(stderr: string): void {
  const errors = stderr.split("\n").filter((line) => line.startsWith("ERROR:"));
  expect(errors.length, stderr).toBeGreaterThan(0);
  expect(stderr).not.toMatch(/internal error|\n\s+at .+:\d+:\d+\)?\n/);
}

/** An HTTP server on 127.0.0.1 that answers 503 until opened, then 200. */
async function startGate(): Promise<{ url: string; open: () => void; close: () => Promise<void> }> {
  let opened = false;
  const server = createServer((_request, response) => {
    response.writeHead(opened ? 200 : 503).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/go`,
    open: () => {
      opened = true;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe.each(MODES)("builds while rmi and prune run on the same store (%s)", (mode) => {
  it("each build succeeds or fails clearly, and every image left runs", async () => {
    const gate = await startGate();
    try {
      await buildsWhileRemoving(mode, gate);
    } finally {
      await gate.close();
    }
  }, 240_000);
});

async function buildsWhileRemoving(mode: Mode, gate: Awaited<ReturnType<typeof startGate>>): Promise<void> {
  const store = world.store(mode);
  const canary = world.canary(mode);
  // Images for rmi to remove while the builds run: one shares their base, one its own layer.
  ok(mode, store, ["tag", "busybox", "old-base:1"]);
  ok(mode, store, [
    "build",
    "-q",
    "-t",
    "old:1",
    world.context({ Dockerfile: "FROM busybox\nRUN echo old > /old\n" }),
  ]);

  const names = ["first", "second"];
  const builds = names.map((name) => {
    const ctx = world.context({ Dockerfile: dockerfile(name, gate.url), "data.txt": `data of ${name}\n` });
    const child = world.spawnTbuild(mode, store, ["build", "--progress=plain", "-t", `${name}:1`, ctx]);
    return { name, child, stderr: new OutputLines(child.stderr!), exited: exitOf(child) };
  });
  // Both run a step before anything is removed.
  for (const build of builds) {
    expect(
      await build.stderr.waitFor(new RegExp(`^#\\d+ [\\d.]+ ${build.name}-begun$`, "m")),
      build.stderr.text,
    ).toBe(true);
  }

  const running = () => builds.some((build) => build.child.exitCode === null);
  const overlapping = new Set<string>();
  /** Runs a removal without blocking this process (it notes when a build ends meanwhile). */
  const remove = async (args: string[]) => {
    const during = running();
    const child = world.spawnTbuild(mode, store, args);
    const stderr = new OutputLines(child.stderr!);
    const { code } = await exitOf(child);
    expect(code, `tbuild ${args.join(" ")}: ${stderr.text}`).toBe(0);
    expect(stderr.text).not.toMatch(/ERROR|internal error/);
    if (during && running()) overlapping.add(args.join(" "));
  };
  // While both builds wait at their gate, each removal once...
  await remove(["rmi", "old:1"]);
  await remove(["rmi", "old-base:1"]);
  await remove(["prune"]);
  await remove(["prune", "--all"]);
  // ...then again and again while they go on to the end (bounded: a build takes seconds).
  gate.open();
  for (let round = 0; round < 30 && running(); round++) {
    await remove(["prune"]);
    await remove(["prune", "--all"]);
  }
  for (const build of builds) await build.exited;

  const images = ok(mode, store, ["images"]);
  expect(images).not.toMatch(/^(docker\.io\/library\/)?old(-base)?\s/m);
  for (const build of builds) {
    const { code } = await build.exited;
    if (code === 0) {
      expect(images).toContain(build.name);
      expect(ok(mode, store, ["run", "--rm", `${build.name}:1`]), build.name).toBe(
        expectedOutput(build.name),
      );
    } else {
      expectClearFailure(build.stderr.text);
    }
  }
  // Each kind of removal ran from start to end while a build ran.
  expect([...overlapping].sort()).toEqual(["prune", "prune --all", "rmi old-base:1", "rmi old:1"]);
  canary.expectUntouched(...builds.map((build) => build.stderr.text));
  world.expectStoreUsable(mode, store);
}
