/**
 * `tbuild debug graph [build flags] CONTEXT`: the BuildGraph and image config `tbuild build` with
 * the same flags would solve, from the same planBuild, running nothing and fetching nothing: base
 * images come from the local store, and one that is not there is shown by reference with the
 * digest "unresolved" and an empty config, with a warning saying how to resolve it.
 */
import { loadConfig } from "../../build/config.js";
import { planBuild } from "../../build/plan.js";
import { targetPlatformsOf } from "../../build/request.js";
import { TbuildError, UsageError } from "../../errors/index.js";
import { formatPlatform } from "../../oci/platform.js";
import type { BuildGraph } from "../../solver/graph.js";
import { parseBuildRequest } from "../build-request.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const format = (args.values.format as string | undefined) ?? "json";
  if (format !== "json" && format !== "dot")
    throw new TbuildError("E_USAGE", `--format must be json or dot, not "${format}"`, { exitCode: 2 });
  const request = await parseBuildRequest(args, ctx, "debug graph");
  const platforms = targetPlatformsOf(request.platforms);
  if (platforms.length > 1) {
    throw new UsageError(
      `tbuild debug graph shows one platform's graph, and --platform names ${platforms.length} (${platforms.map(formatPlatform).join(", ")}): give one of them`,
    );
  }
  const plan = await planBuild(request, {
    store: await openCommandStore(ctx),
    config: await loadConfig(ctx.env),
    env: ctx.env,
    cwd: ctx.cwd,
    signal: ctx.signal,
    warn: ctx.warn,
    offline: true,
  });
  for (const ref of plan.unresolved) {
    ctx.warn(
      `base image ${ref} is not in the local store, so its config is not inherited: 'tbuild pull ${ref}' resolves it`,
    );
  }
  const { lowered } = plan;
  if (format === "dot") {
    ctx.stdout.write(toDot(lowered.graph, lowered.root));
  } else {
    ctx.stdout.write(`${JSON.stringify(lowered, null, 2)}\n`);
  }
  return 0;
}

function toDot(graph: BuildGraph, root: string | undefined): string {
  const short = (d: string) => d.slice(7, 19);
  const lines = ["digraph build {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];'];
  for (const [digest, vertex] of Object.entries(graph.vertices)) {
    const label = `${graph.info[digest]?.name ?? vertex.op.kind}\\n${short(digest)}`;
    const style = digest === root ? ", style=bold" : graph.info[digest]?.internal ? ", style=dashed" : "";
    lines.push(`  "${short(digest)}" [label=${JSON.stringify(label).replace(/\\\\n/g, "\\n")}${style}];`);
    for (const input of vertex.inputs) lines.push(`  "${short(input)}" -> "${short(digest)}";`);
  }
  lines.push("}");
  return `${lines.join("\n")}\n`;
}
