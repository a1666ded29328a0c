import { createInterface } from "node:readline/promises";
import { Writable } from "node:stream";
import { loadConfig, registryOptions } from "../../build/config.js";
import { UsageError } from "../../errors/index.js";
import { normalizeRegistryName, storeCredentials, verifyLogin } from "../../oci/registry/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/**
 * `tbuild login [-u USER] [-p PASSWORD | --password-stdin] [REGISTRY]`: checks the credentials
 * against the registry, then saves them in docker's config.json (or its credential helper), where
 * docker, podman and skopeo find them too.
 */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (extra.length > 0) throw new UsageError("tbuild login takes at most one REGISTRY");
  const registry = normalizeRegistryName(text);
  let username = args.values.username as string | undefined;
  let password = args.values.password as string | undefined;
  const fromStdin = args.values["password-stdin"] === true;
  if (fromStdin && password !== undefined)
    throw new UsageError("--password and --password-stdin are exclusive");
  if (fromStdin && username === undefined)
    throw new UsageError("--password-stdin needs the user name as -u USER");
  if (password !== undefined) {
    ctx.warn(
      "a password given with --password shows in the process list and shell history; use --password-stdin",
    );
  }
  if (fromStdin) {
    password = (await readAll(process.stdin)).replace(/[\r\n]+$/, "");
  }
  if (username === undefined || password === undefined) {
    if (!process.stdin.isTTY) {
      throw new UsageError("no terminal to ask for credentials: give -u USER and --password-stdin");
    }
    username ??= await ask(`Username for ${registry}: `, ctx, false);
    password ??= await ask("Password: ", ctx, true);
  }
  if (username === "") throw new UsageError("the user name is empty");
  if (password === "") throw new UsageError("the password is empty");

  const config = await loadConfig(ctx.env);
  await verifyLogin(
    registry,
    { username, password },
    registryOptions(config, { env: ctx.env, signal: ctx.signal }),
  );
  const where = await storeCredentials(registry, { username, password }, ctx.env);
  ctx.stderr.write(`credentials for ${registry} saved in ${where}\n`);
  ctx.stdout.write("Login Succeeded\n");
  return 0;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = "";
  for await (const chunk of stream)
    text += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
  return text;
}

/** Asks on the terminal; a hidden answer is not echoed. */
async function ask(question: string, ctx: CommandContext, hidden: boolean): Promise<string> {
  let muted = false;
  const output = new Writable({
    write(chunk, _encoding, callback) {
      if (!muted) ctx.stderr.write(chunk);
      callback();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  try {
    const answer = rl.question(question);
    muted = hidden;
    return (await answer).trim();
  } finally {
    if (hidden) ctx.stderr.write("\n");
    rl.close();
  }
}
