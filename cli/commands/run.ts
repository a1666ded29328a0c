import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import type { Image } from "../../oci/image.js";
import { hostPlatform, type Platform, parsePlatform } from "../../oci/platform.js";
import type { Store } from "../../oci/store/index.js";
import { containerConfig, parseEnvFile, parseEnvFlags } from "../../runtime/config.js";
import { type MountRequest, parseVolumeFlag } from "../../runtime/mounts.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/** Signals `docker run` passes on to the container's process (its sig-proxy), as tbuild does. */
const FORWARDED_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [imageText, ...commandArgs] = args.positionals;
  if (imageText === undefined) throw new UsageError("tbuild run needs an IMAGE (and optionally a command)");
  const values = args.values;
  const network = (values.network as string | undefined) ?? "host";
  if (network !== "host" && network !== "none" && network !== "default") {
    throw new UsageError(`--network must be host or none, not "${network}" (bridges are not supported)`);
  }
  const platform = values.platform ? parsePlatform(values.platform as string) : hostPlatform();
  const anonymousName = () => randomBytes(32).toString("hex");
  const mounts: MountRequest[] = ((values.volume as string[] | undefined) ?? []).map((v) =>
    parseVolumeFlag(v, ctx.cwd, anonymousName),
  );
  const env: string[] = [];
  for (const file of (values["env-file"] as string[] | undefined) ?? []) {
    env.push(...parseEnvFile(await readEnvFile(path.resolve(ctx.cwd, file), file), file, ctx.env));
  }
  env.push(...parseEnvFlags((values.env as string[] | undefined) ?? [], ctx.env));
  const tty = values.tty === true;
  const interactive = values.interactive === true;
  if (tty && interactive && !process.stdin.isTTY) {
    throw new UsageError("the input device is not a TTY: drop -t, or run tbuild from a terminal");
  }
  if (tty && !hasControllingTerminal()) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "-t without a terminal is not supported yet (runc in the foreground needs tbuild's own terminal): run tbuild in a terminal, or drop -t",
    );
  }

  // Everything below touches snapshots: an unprivileged user re-runs this command as root of a
  // user namespace over its subordinate ids (and the re-run does all of it, the pull included).
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  // Loaded only now: the unprivileged tbuild that re-executes itself above never needs them. The
  // store's first file call is made before the runtime's modules are compiled, and runs meanwhile.
  const { defaultStoreRoot, openStore } = await import("../../oci/store/index.js");
  const opening = openStore(defaultStoreRoot(ctx.env));
  opening.catch(() => {});
  const runtime = import("../../runtime/container.js");
  runtime.catch(() => {});
  const store = await opening;
  const { image, name: imageName } = await resolveImage(store, imageText, platform, ctx);
  const config = containerConfig(image.config.config ?? {}, {
    ...(values.entrypoint !== undefined ? { entrypoint: values.entrypoint as string } : {}),
    args: commandArgs,
    env,
    ...(values.workdir !== undefined ? { workingDir: values.workdir as string } : {}),
    ...(values.user !== undefined ? { user: values.user as string } : {}),
    anonymousVolumes: mounts.filter((m) => m.kind === "volume" && m.anonymous).map((m) => m.destination),
  });

  const { Container } = await runtime;
  const container = await Container.create(store, {
    image,
    imageName,
    config,
    mounts,
    network: network === "none" ? "none" : "host",
    tty,
    interactive,
    remove: values.rm === true,
    ...(values.name !== undefined ? { name: values.name as string } : {}),
    warn: ctx.warn,
  });

  // Once the process runs, a signal to tbuild is the container's (docker's sig-proxy): the CLI's own
  // handlers, which cancel the command, are set aside until it ends.
  const saved = FORWARDED_SIGNALS.map((signal) => [signal, process.listeners(signal)] as const);
  const forward = (signal: NodeJS.Signals) => {
    // A terminal's Ctrl-C and Ctrl-\ reach runc too, which shares tbuild's process group and passes
    // them on itself: passing them on again would deliver them twice.
    if (process.stdin.isTTY && (signal === "SIGINT" || signal === "SIGQUIT")) return;
    container.kill(signal);
  };
  let forwarding = false;
  const startForwarding = () => {
    forwarding = true;
    for (const [signal, listeners] of saved) {
      for (const listener of listeners) process.off(signal, listener);
      process.on(signal, forward);
    }
  };
  try {
    const exit = await container.run({
      stdin: interactive ? "inherit" : "ignore",
      stdout: "inherit",
      stderr: "inherit",
      // Aborted on Ctrl-C, and, rootless, when the tbuild outside the user namespace is killed (main.ts).
      signal: ctx.signal,
      onStart: startForwarding,
    });
    return exit.exitCode;
  } catch (err) {
    // Interrupted before the process started (while unpacking, say): the user's own doing.
    if (ctx.signal.aborted && !(err instanceof TbuildError)) {
      throw new TbuildError("E_INTERRUPTED", `${(ctx.signal.reason as Error)?.message ?? "interrupted"}`, {
        exitCode: 130,
      });
    }
    throw err;
  } finally {
    if (forwarding) {
      for (const [signal, listeners] of saved) {
        process.off(signal, forward);
        for (const listener of listeners) process.on(signal, listener as (signal: NodeJS.Signals) => void);
      }
    }
  }
}

/** Whether this process has a controlling terminal, which runc's foreground console mode uses. */
function hasControllingTerminal(): boolean {
  try {
    closeSync(openSync("/dev/tty", "r"));
    return true;
  } catch {
    return false;
  }
}

async function readEnvFile(file: string, shown: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(
      `--env-file ${shown}: cannot read it (${(err as NodeJS.ErrnoException).code ?? err})`,
    );
  }
}

/**
 * The image `text` names, for `platform`: from the local store first (a name or an image ID), else
 * pulled from its registry as `tbuild pull` would (the registry client is loaded only then).
 */
async function resolveImage(
  store: Store,
  text: string,
  platform: Platform,
  ctx: CommandContext,
): Promise<{ image: Image; name: string }> {
  const [{ readImageForPlatform }, { ImageNotFoundError }] = await Promise.all([
    import("../../oci/image.js"),
    import("../../oci/store/index.js"),
  ]);
  try {
    // A name is found with one read of the store's index; IDs and the rest go the long way.
    const record =
      (await store.images.get(text).catch(() => undefined)) ??
      (await (await import("../store.js")).findLocalImage(store, text));
    const image = await readImageForPlatform(store.content, record.descriptor, platform, record.name);
    return { image, name: text };
  } catch (err) {
    if (!(err instanceof ImageNotFoundError)) throw err;
  }
  const [{ pullImage }, { loadConfig, registryOptions }, { parseReference }] = await Promise.all([
    import("../../oci/registry/index.js"),
    import("../../build/config.js"),
    import("../../oci/reference.js"),
  ]);
  const config = await loadConfig(ctx.env);
  ctx.stderr.write(`Unable to find image '${text}' locally; pulling it\n`);
  const pulled = await pullImage(store, parseReference(text), {
    platform,
    ...registryOptions(config, ctx),
  });
  const image = await readImageForPlatform(
    store.content,
    pulled.index ?? pulled.descriptor,
    platform,
    pulled.name,
  );
  return { image, name: text };
}
