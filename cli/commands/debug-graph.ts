import { TbuildError, UsageError } from "../../errors/index.js";
import { readDockerignore } from "../../frontend/dockerignore.js";
import { lowerDockerfile } from "../../frontend/lower/index.js";
import type { ImageResolver, ResolvedImage } from "../../frontend/resolver.js";
import { parseDockerfile } from "../../frontend/syntax/index.js";
import { hostPlatform } from "../../oci/platform.js";
import { formatReference, parseReference } from "../../oci/reference.js";
import type { Store } from "../../oci/store/index.js";
import type { BuildGraph } from "../../solver/graph.js";
import { readDockerfileInput } from "../dockerfile.js";
import { parseBuildNetwork } from "../network.js";
import { ImageNotLocalError, storeImageResolver } from "../resolver.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";
import { parseBuildPlatform, parseKeyValues } from "../values.js";

/**
 * `debug graph` runs nothing and fetches nothing: base images come from the local store. One that
 * is not there is shown by reference with the digest "unresolved" and an empty config (no
 * inherited ENV, USER or ONBUILD), and a warning says how to resolve it.
 */
function localFirst(store: Store, unresolved: Set<string>): ImageResolver {
  const local = storeImageResolver(store, { pull: "never" });
  return {
    async resolveImage(ref, platform): Promise<ResolvedImage> {
      try {
        return await local.resolveImage(ref, platform);
      } catch (err) {
        if (!(err instanceof ImageNotLocalError)) throw err;
      }
      const normalized = formatReference(parseReference(ref));
      unresolved.add(normalized);
      return {
        ref: normalized,
        digest: "unresolved",
        platform,
        config: {
          architecture: platform.architecture,
          os: platform.os,
          config: {},
          rootfs: { type: "layers", diff_ids: [] },
        },
      };
    },
  };
}

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [contextArg, ...extra] = args.positionals;
  if (contextArg === undefined || extra.length > 0) {
    throw new UsageError("tbuild debug graph takes exactly one CONTEXT directory");
  }
  const { contextDir, dockerfilePath, displayName, source } = await readDockerfileInput(
    ctx.cwd,
    contextArg,
    args.values.file as string | undefined,
  );
  const format = (args.values.format as string | undefined) ?? "json";
  if (format !== "json" && format !== "dot")
    throw new TbuildError("E_USAGE", `--format must be json or dot, not "${format}"`, { exitCode: 2 });

  const targetPlatform = parseBuildPlatform(args.values.platform as string | undefined);
  const ast = parseDockerfile(source, { file: displayName });
  for (const w of ast.warnings) ctx.warn(`${ast.file}:${w.range.start.line}: ${w.message}`);
  const unresolved = new Set<string>();
  const target = args.values.target as string | undefined;
  const lowered = await lowerDockerfile(ast, {
    buildArgs: parseKeyValues((args.values["build-arg"] as string[] | undefined) ?? [], "--build-arg"),
    ...(target !== undefined ? { target } : {}),
    targetPlatform,
    buildPlatform: hostPlatform(),
    resolver: localFirst(await openCommandStore(ctx), unresolved),
    excludePatterns: await readDockerignore(contextDir, dockerfilePath),
    network: parseBuildNetwork(args.values.network as string | undefined),
    signal: ctx.signal,
    warn: (w) => ctx.warn(`${w.position ? `${w.file}:${w.position.line}: ` : ""}${w.message}`),
  });
  for (const ref of unresolved) {
    ctx.warn(
      `base image ${ref} is not in the local store, so its config is not inherited: 'tbuild pull ${ref}' resolves it`,
    );
  }
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
