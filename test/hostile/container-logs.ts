/**
 * Containers recorded by hand in a hostile world's store, with a log written as the mode's user
 * would write it (the detached monitor runs as that user): for `tbuild logs` and `ps` cases that
 * need no running container.
 */
import { execFileSync } from "node:child_process";
import { type ContainerRecord, ContainerStore } from "../../runtime/containers.js";
import { type LogOptions, type LogStream, LogWriter, parseLogOptions } from "../../runtime/logs.js";
import { userIds } from "../helpers/judges.js";
import { type Mode, ROOTLESS_USER } from "./harness.js";

/** Runs `fn` (synchronous) with the effective ids of the mode's user. */
export function asModeUser<T>(mode: Mode, fn: () => T): T {
  if (mode === "root") return fn();
  const { uid, gid } = userIds(ROOTLESS_USER);
  process.setegid!(gid);
  process.seteuid!(uid);
  try {
    return fn();
  } finally {
    process.seteuid!(0);
    process.setegid!(0);
  }
}

export interface RecordedContainer {
  record: ContainerRecord;
  containers: ContainerStore;
  logFile: string;
  /** A writer of its log whose every call runs as the mode's user. */
  writer(): { write(stream: LogStream, data: string | Uint8Array): void; close(): void };
}

/** Records a container named `name` in `store` (an exited one unless `state` says otherwise). */
export async function recordContainer(
  mode: Mode,
  store: string,
  name: string,
  options: { state?: ContainerRecord["state"]; logOptions?: LogOptions; id?: string } = {},
): Promise<RecordedContainer> {
  const containers = new ContainerStore(store);
  const logOptions = options.logOptions ?? parseLogOptions([]);
  const record = await containers.create(
    {
      id:
        options.id ??
        `${"e".repeat(56)}${Math.floor(Math.random() * 0xffffffff)
          .toString(16)
          .padStart(8, "0")}`,
      created: new Date().toISOString(),
      image: {
        name: "busybox",
        descriptor: {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: `sha256:${"f".repeat(64)}`,
          size: 1,
        },
      },
      config: {},
      path: "sh",
      args: [],
      mounts: [],
      network: "host",
      tty: false,
      interactive: false,
      logOptions,
      state: options.state ?? { status: "exited", exitCode: 0, finishedAt: new Date().toISOString() },
    },
    name,
  );
  if (mode === "rootless") {
    for (const dir of [containers.dir, containers.containerDir(record.id), `${store}/container-names`]) {
      execFileSync("chown", ["-R", ROOTLESS_USER, dir]);
    }
  }
  const logFile = containers.logFile(record.id);
  return {
    record,
    containers,
    logFile,
    writer() {
      const log = asModeUser(mode, () => new LogWriter(logFile, logOptions));
      return {
        write: (stream, data) => asModeUser(mode, () => log.write(stream, data)),
        close: () => asModeUser(mode, () => log.close()),
      };
    },
  };
}
