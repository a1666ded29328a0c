import { readFileSync } from "node:fs";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(_args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  ctx.stdout.write(`tbuild ${pkg.version}\nnode ${process.version}\n`);
  return 0;
}
