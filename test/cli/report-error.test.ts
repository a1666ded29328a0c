/**
 * How the CLI prints a failure, given real errors: a bug's TypeError, Node's errors from a real
 * spawn, connect, write and TLS handshake. A user error is one line and never a stack; an internal
 * error shows its stack with --debug only; a system error a user can act on is explained.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { InterruptedError, reportError } from "../../cli/report-error.js";
import { TbuildError, UsageError } from "../../errors/index.js";
import { freePort, makeCertificate } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const STACK = /\n\s+at /;
const context = { storeRoot: "/var/lib/tbuild-test-store", configPath: "/etc/tbuild-test/config.toml" };

async function report(
  err: unknown,
  options: { debug?: boolean; signal?: AbortSignal } = {},
): Promise<{ code: number; text: string }> {
  let text = "";
  const stderr = new Writable({
    write(chunk, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  const code = await reportError(err, {
    debug: options.debug ?? false,
    signal: options.signal ?? new AbortController().signal,
    env: {},
    stderr,
    context,
  });
  return { code, text };
}

/** A real bug: reading a property of undefined. */
function typeError(): TypeError {
  try {
    const missing = undefined as unknown as { field: { inner: number } };
    return missing.field as never;
  } catch (err) {
    return err as TypeError;
  }
}

/** The error Node gives when a program is not on PATH. */
function spawnError(program: string): NodeJS.ErrnoException {
  const error = spawnSync(program, ["--version"], { env: { PATH: "/nonexistent" } }).error;
  if (!error) throw new Error(`${program} started`);
  return error as NodeJS.ErrnoException;
}

describe("reportError", () => {
  it("prints a user error as one line, without a stack even with --debug", async () => {
    for (const debug of [false, true]) {
      const { code, text } = await report(new TbuildError("E_X", 'tag "1" not found'), { debug });
      expect(code).toBe(1);
      expect(text).toBe('ERROR: tag "1" not found\n');
    }
    expect((await report(new UsageError("bad flag"), { debug: true })).code).toBe(2);
  });

  it("prints an internal error's stack only with --debug", async () => {
    const plain = await report(typeError());
    expect(plain.code).toBe(1);
    expect(plain.text).toMatch(/^ERROR: internal error: Cannot read properties of undefined/);
    expect(plain.text).toContain("Run again with --debug for the stack trace, and please report it.");
    expect(plain.text).not.toMatch(STACK);

    const debug = await report(typeError(), { debug: true });
    expect(debug.text).toMatch(STACK);
    expect(debug.text).toContain("report-error.test.ts");
  });

  it("says a user error that carries a bug is a bug, and shows the bug's stack with --debug", async () => {
    const bug = typeError();
    const step = new TbuildError("E_STEP_FAILED", `[2/2] RUN make: ${bug.message}`, { cause: bug });
    const plain = await report(step);
    expect(plain.text).toMatch(/^ERROR: \[2\/2\] RUN make: Cannot read properties of undefined/);
    expect(plain.text).toContain("This looks like a bug in tbuild: run again with --debug");
    expect(plain.text).not.toMatch(STACK);
    expect((await report(step, { debug: true })).text).toMatch(STACK);
  });

  it("names a program that is not installed and the package that has it", async () => {
    const { code, text } = await report(spawnError("zstd"));
    expect(code).toBe(1);
    expect(text).toBe(
      "ERROR: zstd is not installed (not found on PATH)\nTo fix it, run: sudo apt-get install zstd\n",
    );
    expect((await report(spawnError("tbuild-no-such-tool"))).text).toBe(
      "ERROR: tbuild-no-such-tool is not installed (not found on PATH)\n",
    );
  });

  it("explains a refused connection, naming the address and the config file", async () => {
    const port = await freePort();
    const refused = await new Promise<Error>((resolve) => {
      net.connect(port, "127.0.0.1").once("error", resolve);
    });
    const { text } = await report(refused, { debug: true });
    expect(text).toContain(
      `ERROR: connection refused by 127.0.0.1:${port}: is it running and the address right?`,
    );
    expect(text).toContain(context.configPath);
    expect(text).not.toMatch(STACK);
  });

  it("explains an untrusted certificate and the config.toml keys that fix it", async () => {
    const { cert, key } = makeCertificate(tempDir("cert"), "server");
    const server = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (_req, res) =>
      res.end(),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const failure = await new Promise<Error>((resolve) => {
        https.get({ host: "127.0.0.1", port, path: "/" }).once("error", resolve);
      });
      const { text } = await report(failure);
      expect(text).toContain(
        "ERROR: TLS: the server's certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT",
      );
      expect(text).toContain(`[registry."HOST"] ca = ["/path/to/ca.pem"]`);
      expect(text).toContain("insecure = true");
    } finally {
      server.close();
    }
  });

  it("puts what a full disk means in place of the raw message a user error relays", async () => {
    let full: Error | undefined;
    try {
      writeFileSync("/dev/full", "x");
    } catch (err) {
      full = err as Error;
    }
    expect(full).toBeDefined();
    const step = new TbuildError("E_STEP_FAILED", `[2/2] RUN true: ${full!.message}`, { cause: full });
    const { text } = await report(step);
    expect(text).toMatch(
      new RegExp(`^ERROR: \\[2/2\\] RUN true: the store at ${context.storeRoot} is most likely out of space`),
    );
    expect(text).toContain("`tbuild prune`");
    expect(text).not.toContain("bug");
  });

  it("reports an interrupted command as such, with 128 + the signal's number", async () => {
    const controller = new AbortController();
    controller.abort(new InterruptedError("SIGINT"));
    const { code, text } = await report(new Error("The operation was aborted"), {
      signal: controller.signal,
    });
    expect(code).toBe(130);
    expect(text).toBe("ERROR: interrupted by SIGINT\n");
  });

  it("shows a huge line of a message (a registry's 10 MB answer) as an excerpt, counting the rest", async () => {
    const body = "x".repeat(10_000_000);
    const { text } = await report(
      new TbuildError("E_REGISTRY", `registry r.example answered: ${body}\nsecond line`),
    );
    expect(text.length).toBeLessThan(1000);
    expect(text).toMatch(/^ERROR: registry r\.example answered: x+… \(\d+ more bytes\)\nsecond line\n$/);
    const shown = /answered: (x+)…/.exec(text)![1]!.length;
    expect(text).toContain(`(${10_000_000 - shown} more bytes)`);
  });

  it("shows at most a screenful of lines of a message, counting the others", async () => {
    const lines = Array.from({ length: 5000 }, (_, i) => `line ${i}`);
    const { text } = await report(new TbuildError("E_X", lines.join("\n")));
    expect(text.split("\n").length).toBeLessThan(60);
    expect(text).toMatch(/^ERROR: line 0\n/);
    expect(text).toMatch(/… \(\d+ more lines\)\n$/);
  });
});
