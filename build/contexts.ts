/**
 * `tbuild build --build-context NAME=SRC`, as buildx takes it: SRC is a directory, an image
 * (`docker-image://REF`), or an image in an OCI layout directory (`oci-layout://DIR[:TAG]`),
 * which is read into the content store here so the build uses it like any stored image. On a
 * remote build's worker, DIR is the client's: the image comes from the client instead
 * (`layouts`, build/remote-layout.ts), chosen in DIR by the same rules (`chooseLayoutImage`).
 */
import { stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import { readDockerignore } from "../frontend/dockerignore.js";
import type { NamedContext } from "../frontend/lower/index.js";
import type { ResolvedImage } from "../frontend/resolver.js";
import { type LoadedImage, loadArchive } from "../oci/archive/index.js";
import { packDirectory } from "../oci/archive/rootfs.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import type { Store } from "../oci/store/index.js";
import { contextSource } from "./context-source.js";
import { resolveStoredImage } from "./resolver.js";

export interface BuildContexts {
  namedContexts: Record<string, NamedContext>;
  /** Directories by local source name, for the worker (beside `context`). */
  localSources: Record<string, string>;
}

/**
 * A remote build's worker: the image of the client's layout that context `name` names, for
 * `platform`, fetched from the client into this store, in place of reading a directory here.
 */
export type LayoutImages = (name: string, platform: Platform, signal?: AbortSignal) => Promise<ResolvedImage>;

/** The request's named contexts (`--build-context NAME=SRC`, by name) as the lowering takes them. */
export async function parseBuildContexts(
  sources: Readonly<Record<string, string>>,
  options: { cwd: string; store: Store; platform: Platform; signal?: AbortSignal; layouts?: LayoutImages },
): Promise<BuildContexts> {
  const contexts: BuildContexts = { namedContexts: {}, localSources: {} };
  for (const [name, source] of Object.entries(sources)) {
    const kind = contextSource(name, source);
    if (kind.kind === "image") {
      contexts.namedContexts[name] = { type: "image", ref: kind.ref };
    } else if (kind.kind === "oci-layout") {
      contexts.namedContexts[name] = {
        type: "resolved",
        image: options.layouts
          ? await options.layouts(name, options.platform, options.signal)
          : await importLayout(name, kind.layout, options),
      };
    } else if (kind.kind === "url") {
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `--build-context ${name}=${source}: this kind of source is not supported yet (use a directory, docker-image:// or oci-layout://)`,
      );
    } else {
      const dir = path.resolve(options.cwd, kind.path);
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory())
        throw new UsageError(`--build-context ${name}=${source}: ${dir} is not a directory`);
      contexts.namedContexts[name] = { type: "local", name, excludePatterns: await readDockerignore(dir) };
      contexts.localSources[name] = dir;
    }
  }
  return contexts;
}

/** `DIR[:TAG]` of `oci-layout://DIR[:TAG]`: the directory (which must be one), its tag, and how messages name it. */
export async function layoutSource(
  name: string,
  source: string,
  cwd: string,
): Promise<{ dir: string; tag?: string; what: string }> {
  const colon = source.lastIndexOf(":");
  const hasTag = colon > 0 && !source.slice(colon + 1).includes("/");
  const dir = path.resolve(cwd, hasTag ? source.slice(0, colon) : source);
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory())
    throw new UsageError(`--build-context ${name}=oci-layout://${source}: ${dir} is not a directory`);
  return { dir, ...(hasTag ? { tag: source.slice(colon + 1) } : {}), what: `the OCI layout ${dir}` };
}

/** The image tagged `tag` in a layout (`org.opencontainers.image.ref.name`), or its only image. */
export function chooseLayoutImage(
  name: string,
  what: string,
  images: readonly LoadedImage[],
  tag: string | undefined,
): LoadedImage {
  const matches =
    tag === undefined
      ? images
      : images.filter((image) => image.names.some((n) => n === tag || n.endsWith(`:${tag}`)));
  if (matches.length !== 1) {
    const names = images.flatMap((image) => image.names);
    throw new TbuildError(
      "E_BUILD_CONTEXT",
      `--build-context ${name}: ${what} holds ${matches.length === 0 ? "no" : "more than one"} image${tag ? ` tagged ${tag}` : ""}` +
        (names.length ? ` (it has: ${names.join(", ")}); name one with oci-layout://DIR:TAG` : ""),
    );
  }
  return matches[0]!;
}

async function importLayout(
  name: string,
  source: string,
  options: { cwd: string; store: Store; platform: Platform; signal?: AbortSignal },
) {
  const { dir, tag, what } = await layoutSource(name, source, options.cwd);
  const loaded = await loadArchive(packDirectory(dir), options.store.content, {
    what,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const chosen = chooseLayoutImage(name, what, loaded.images, tag);
  return resolveStoredImage(
    options.store,
    chosen.names[0] ?? name,
    chosen.descriptor,
    options.platform,
    `${what} for ${formatPlatform(options.platform)}`,
  );
}
