import { createReadStream } from "node:fs";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { loadArchive } from "../../oci/archive/index.js";
import { normalizeImageName } from "../../oci/store/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0)
    throw new UsageError("tbuild load takes no arguments: give the archive with -i FILE");
  const input = args.values.input as string | undefined;
  const extraName = args.values.name as string | undefined;
  const extraNormalized = extraName === undefined ? undefined : normalizeImageName(extraName);
  if ((input === undefined || input === "-") && process.stdin.isTTY) {
    throw new UsageError("tbuild load reads a tar archive: name it with -i FILE, or redirect standard input");
  }
  const fromStdin = input === undefined || input === "-";
  const what = fromStdin ? "standard input" : input;
  const stream = fromStdin
    ? process.stdin
    : createReadStream(path.resolve(ctx.cwd, input), { highWaterMark: 1 << 20 });
  stream.on("error", () => {});
  const store = await openCommandStore(ctx);
  let loaded: Awaited<ReturnType<typeof loadArchive>>;
  try {
    loaded = await loadArchive(stream, store.content, { what, signal: ctx.signal });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EACCES" || code === "EISDIR") {
      throw new TbuildError("E_NO_SUCH_FILE", `cannot read ${what} (${code})`, { cause: err });
    }
    throw err;
  }
  if (extraNormalized !== undefined && loaded.images.length !== 1) {
    throw new UsageError(`--name names one image, but ${what} holds ${loaded.images.length}`);
  }
  const unnamed: string[] = [];
  for (const image of loaded.images) {
    const names = [...image.names];
    if (extraNormalized !== undefined && !names.includes(extraNormalized)) names.push(extraNormalized);
    if (names.length === 0) unnamed.push(image.descriptor.digest);
    for (const name of names) {
      await store.images.put(name, image.descriptor);
      ctx.stdout.write(`Loaded image: ${name}\n`);
    }
  }
  if (unnamed.length > 0) {
    throw new TbuildError(
      "E_UNNAMED_IMAGE",
      `${what} holds ${unnamed.join(", ")} without a name, which the store cannot keep: load it again with --name NAME`,
    );
  }
  return 0;
}
