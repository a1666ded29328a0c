/**
 * The control socket of a running container: `<containerDir>/control.sock`, served by the process
 * running it (a foreground `tbuild run`, or a detached container's monitor), so that `tbuild stop`,
 * `kill`, `wait` and `exec` reach the container from any other process, with no daemon. Whoever can
 * reach the store's directory (0700 when rootless) can use it; no one else.
 *
 * One request per connection, a line of JSON each way: the answer comes when the request is done
 * (`stop` and `wait` answer once the container has exited). The connection closing without an
 * answer means the process running the container is gone.
 *
 * A Unix socket's path is limited to 107 bytes; a store deep in a directory tree goes over that,
 * so a long one is reached as `/proc/self/fd/N/control.sock` through a descriptor of its directory.
 */
import { closeSync, openSync, rmSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { TbuildError } from "../errors/index.js";

export const CONTROL_SOCKET = "control.sock";

export type ControlRequest =
  | { op: "stop" /** Seconds before SIGKILL; the container's own (or 10) when absent. */; timeout?: number }
  | { op: "kill"; signal: string }
  | { op: "wait" }
  | { op: "exec"; user?: string; workdir?: string; env?: string[]; args: string[] };

/** What `exec` needs to run `runc exec` in the container's namespaces (ExecPlan, runtime/exec.ts). */
export interface ExecTarget {
  runc: string;
  /** runc's global flags for this container (`--root`, `--rootless`). */
  runcGlobal: string[];
  /** runc's id of the container. */
  sandboxId: string;
  /** A process in the user namespace the container runs in (rootless), to enter it by. */
  namespacePid?: number;
  /** The process as runc exec takes it (its `--process` file). */
  process: {
    args: string[];
    env: string[];
    cwd: string;
    user: { uid: number; gid: number; additionalGids?: number[] };
  };
}

export type ControlAnswer =
  | { ok: true; exitCode?: number; exec?: ExecTarget }
  | { ok: false; code: string; message: string; exitCode?: number };

/** What the process running a container does for each request. */
export interface ControlHandler {
  stop(timeoutSeconds: number | undefined): Promise<number>;
  kill(signal: NodeJS.Signals): void;
  wait(): Promise<number>;
  exec(request: Extract<ControlRequest, { op: "exec" }>): Promise<ExecTarget>;
}

/** A short path to `name` in `dir`, with a descriptor to close after use when one was needed. */
function shortPath(dir: string, name: string): { path: string; release(): void } {
  const full = path.join(dir, name);
  if (Buffer.byteLength(full) < 100) return { path: full, release: () => {} };
  const fd = openSync(dir, "r");
  return {
    path: `/proc/self/fd/${fd}/${name}`,
    release: () => closeSync(fd),
  };
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly file: string;

  private constructor(server: net.Server, file: string) {
    this.server = server;
    this.file = file;
  }

  /** Serves `handler` at `<dir>/control.sock` (a stale socket file there is replaced). */
  static async listen(dir: string, handler: ControlHandler): Promise<ControlServer> {
    const file = path.join(dir, CONTROL_SOCKET);
    rmSync(file, { force: true });
    // Half-open: a client ends its side once its request is sent, and waits for the answer.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => serve(socket, handler));
    // Never what keeps the process alive: the container is.
    server.unref();
    const target = shortPath(dir, CONTROL_SOCKET);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(target.path, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } finally {
      target.release();
    }
    return new ControlServer(server, file);
  }

  close(): void {
    this.server.close();
    rmSync(this.file, { force: true });
  }
}

function serve(socket: net.Socket, handler: ControlHandler): void {
  socket.on("error", () => {});
  let buffered = "";
  socket.on("data", (chunk) => {
    buffered += chunk.toString("utf8");
    const end = buffered.indexOf("\n");
    if (end < 0) {
      if (buffered.length > 1 << 20) socket.destroy();
      return;
    }
    socket.removeAllListeners("data");
    void answer(buffered.slice(0, end), handler).then((reply) => {
      if (!socket.destroyed) socket.end(`${JSON.stringify(reply)}\n`);
    });
  });
}

async function answer(line: string, handler: ControlHandler): Promise<ControlAnswer> {
  try {
    const request = JSON.parse(line) as ControlRequest;
    switch (request.op) {
      case "stop":
        return { ok: true, exitCode: await handler.stop(request.timeout) };
      case "kill":
        handler.kill(request.signal as NodeJS.Signals);
        return { ok: true };
      case "wait":
        return { ok: true, exitCode: await handler.wait() };
      case "exec":
        return { ok: true, exec: await handler.exec(request) };
      default:
        return { ok: false, code: "E_CONTROL", message: `unknown request ${JSON.stringify(line)}` };
    }
  } catch (err) {
    if (err instanceof TbuildError)
      return { ok: false, code: err.code, message: err.message, exitCode: err.exitCode };
    return { ok: false, code: "E_CONTROL", message: (err as Error).message };
  }
}

/** A container that is not running: nothing serves its control socket, or it ended meanwhile. */
export class ContainerNotRunningError extends TbuildError {
  constructor(name: string) {
    super("E_CONTAINER_NOT_RUNNING", `container ${name} is not running`);
  }
}

/**
 * Sends one request to the container whose directory is `dir` and resolves to the answer; rejects
 * with ContainerNotRunningError when nothing serves there (the container is not running) or the server
 * went away before answering, and with the server's own error when it refused.
 */
export function controlRequest(dir: string, name: string, request: ControlRequest): Promise<ControlAnswer> {
  const target = shortPath(dir, CONTROL_SOCKET);
  return new Promise<ControlAnswer>((resolve, reject) => {
    const socket = net.connect(target.path);
    let released = false;
    const release = () => {
      if (!released) target.release();
      released = true;
    };
    let text = "";
    socket.once("connect", () => {
      release();
      socket.end(`${JSON.stringify(request)}\n`);
    });
    socket.on("data", (chunk) => {
      text += chunk.toString("utf8");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      release();
      if (err.code === "ENOENT" || err.code === "ECONNREFUSED" || err.code === "ECONNRESET") {
        reject(new ContainerNotRunningError(name));
      } else reject(err);
    });
    socket.once("close", () => {
      release();
      const line = text.split("\n")[0];
      if (!line) {
        reject(new ContainerNotRunningError(name));
        return;
      }
      const reply = JSON.parse(line) as ControlAnswer;
      if (!reply.ok) {
        reject(
          new TbuildError(
            reply.code,
            reply.message,
            reply.exitCode !== undefined ? { exitCode: reply.exitCode } : {},
          ),
        );
      } else resolve(reply);
    });
  });
}
