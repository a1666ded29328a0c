/**
 * Planning: a BuildRequest → the BuildGraph and the image config, nothing run. The one place a
 * request becomes lowering options, so that `tbuild debug graph` prints the very graph `tbuild
 * build` solves (both call planBuild; the build hands its result to the solver untouched, and
 * says so in its `build.planned` event).
 */
import { readDockerignore } from "../frontend/dockerignore.js";
import { type LoweredBuild, lowerDockerfile } from "../frontend/lower/index.js";
import { parseDockerfileCached } from "../frontend/syntax/parse-cache.js";
import { hostPlatform, type Platform } from "../oci/platform.js";
import type { Store } from "../oci/store/index.js";
import { registryOptions, type TbuildConfig } from "./config.js";
import { type LayoutImages, parseBuildContexts } from "./contexts.js";
import { type DockerfileInput, readRequestDockerfile } from "./dockerfile.js";
import { type BuildRequest, targetPlatformOf } from "./request.js";
import { localImageResolver, storeImageResolver } from "./resolver.js";

/** What planning needs from whoever asks: the store and config, and where the request was made. */
export interface PlanContext {
  store: Store;
  config: TbuildConfig;
  env: NodeJS.ProcessEnv;
  /** Relative paths in the request are relative to this. */
  cwd: string;
  signal: AbortSignal;
  warn: (message: string) => void;
  /**
   * Base images from the local store only, and one it lacks given by reference with an empty
   * config (`debug graph`, which runs and fetches nothing). A build never plans this way.
   */
  offline?: boolean;
  /** One platform's plan of a build of several: step names start with the platform. */
  platformInNames?: boolean;
  /** A remote build's worker: `oci-layout://` contexts are the client's, served by it. */
  layouts?: LayoutImages;
}

export interface BuildPlan {
  dockerfile: DockerfileInput;
  targetPlatform: Platform;
  /** The graph, its root, the image config, the stages: what the solver and exporters get. */
  lowered: LoweredBuild;
  /** Directories by local source name: the build context (`context`) and named directory contexts. */
  localSources: Record<string, string>;
  /** Base images an offline plan could not find in the store. */
  unresolved: string[];
}

export async function planBuild(
  request: BuildRequest,
  ctx: PlanContext,
  dockerfile?: DockerfileInput,
): Promise<BuildPlan> {
  const input = dockerfile ?? (await readRequestDockerfile(request, ctx.cwd));
  const targetPlatform = targetPlatformOf(request.platforms);
  const ast = await parseDockerfileCached(input.source, {
    file: input.displayName,
    cacheDir: `${ctx.store.root}/dockerfiles`,
  });
  for (const w of ast.warnings) ctx.warn(`${ast.file}:${w.range.start.line}: ${w.message}`);
  const contexts = await parseBuildContexts(request.contexts ?? {}, {
    cwd: ctx.cwd,
    store: ctx.store,
    platform: targetPlatform,
    signal: ctx.signal,
    ...(ctx.layouts ? { layouts: ctx.layouts } : {}),
  });
  const unresolved = new Set<string>();
  const resolver = ctx.offline
    ? localImageResolver(ctx.store, unresolved)
    : storeImageResolver(ctx.store, {
        pull: request.pull === true ? "always" : "missing",
        registry: registryOptions(ctx.config, ctx),
      });
  const lowered = await lowerDockerfile(ast, {
    buildArgs: request.buildArgs ?? {},
    namedContexts: contexts.namedContexts,
    ...(request.target !== undefined ? { target: request.target } : {}),
    targetPlatform,
    buildPlatform: hostPlatform(),
    resolver,
    excludePatterns: await readDockerignore(input.contextDir, input.dockerfilePath),
    labels: request.labels ?? {},
    network: request.network ?? "default",
    signal: ctx.signal,
    warn: (w) => ctx.warn(`${w.position ? `${w.file}:${w.position.line}: ` : ""}${w.message}`),
    ...(ctx.platformInNames ? { platformInNames: true } : {}),
  });
  return {
    dockerfile: input,
    targetPlatform,
    lowered,
    localSources: { ...contexts.localSources, context: input.contextDir },
    unresolved: [...unresolved],
  };
}
