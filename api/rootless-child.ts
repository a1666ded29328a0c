/**
 * The far end of api/rootless.ts: `tbuild __library-call`, started by the library inside tbuild's
 * user namespace for an unprivileged caller. It reads the one call from its socket (CONTROL_FD),
 * runs it with the library's own build() or run() (privileged here), and writes back each event,
 * warning and the container's start, then the result or the error, one JSON object per line.
 * An `abort` line, or the caller gone (its socket closed, or the CLI's lifeline and hangup in
 * `signal`), cancels the call as Ctrl-C does.
 */
import { fstatSync } from "node:fs";
import { Socket } from "node:net";
import { createInterface } from "node:readline";
import { UsageError } from "../errors/index.js";
import { errorToWire } from "../errors/wire.js";
import { build } from "./build.js";
import { CONTROL_FD, type FromChild, type LibraryCall, type ToChild } from "./rootless.js";
import { run } from "./run.js";

export async function serveLibraryCall({ signal }: { signal: AbortSignal }): Promise<number> {
  if (!isSocket(CONTROL_FD)) {
    throw new UsageError(
      "tbuild __library-call is the library's own (api/rootless.ts), not a command to type",
    );
  }
  const control = new Socket({ fd: CONTROL_FD, readable: true, writable: true });
  control.on("error", () => {});
  const send = (message: FromChild) => {
    if (control.writable) control.write(`${JSON.stringify(message)}\n`);
  };
  const canceled = new AbortController();
  let kill: ((signal: NodeJS.Signals) => void) | undefined;
  let stop: ((timeout?: number) => void) | undefined;
  const lines = createInterface({ input: control, crlfDelay: Number.POSITIVE_INFINITY });
  // A reset socket is the caller gone, as its close is (below).
  lines.on("error", () => {});
  const call = await new Promise<LibraryCall | undefined>((resolve) => {
    lines.on("line", (line) => {
      const message = JSON.parse(line) as ToChild;
      if (message.type === "abort") canceled.abort(new Error("canceled by the library's caller"));
      else if (message.type === "kill") kill?.(message.signal);
      else if (message.type === "stop") stop?.(message.timeout);
      else resolve(message);
    });
    lines.once("close", () => {
      canceled.abort(new Error("the library's caller is gone"));
      resolve(undefined);
    });
  });
  if (call === undefined) return 1;
  const callSignal = AbortSignal.any([signal, canceled.signal]);
  try {
    const result =
      call.type === "build"
        ? await build(call.request, {
            cwd: call.cwd,
            signal: callSignal,
            onEvent: (event) => send({ type: "event", event }),
          })
        : await run(call.image, {
            ...call.options,
            cwd: call.cwd,
            signal: callSignal,
            // This process's own descriptors: the caller's, or pipes to the caller's streams.
            stdout: "inherit",
            stderr: "inherit",
            onWarning: (message) => send({ type: "warning", message }),
            onStart: (container) => {
              kill = (s) => container.kill(s);
              stop = (timeout) => void container.stop(timeout).catch(() => {});
              send({ type: "started", id: container.id });
            },
          });
    send({ type: "result", result });
  } catch (err) {
    send({ type: "error", error: errorToWire(err) });
  }
  await new Promise<void>((resolve) => control.end(resolve));
  lines.close();
  control.destroy();
  return 0;
}

function isSocket(fd: number): boolean {
  try {
    return fstatSync(fd).isSocket();
  } catch {
    return false;
  }
}
