import type { ImageResolver, ResolvedImage } from "../../frontend/resolver.js";
import { formatReference, parseReference } from "../../oci/reference.js";
import type { ContainerConfig } from "../../oci/spec.js";
import { digestOf } from "../../solver/digest.js";

/**
 * Base images for lowering tests, by reference, until the registry client exists: each has a
 * config and a digest made from it. Asking for any other image fails as a registry would.
 */
export function fixtureResolver(
  images: Record<string, ContainerConfig>,
): ImageResolver & { asked: string[] } {
  const byRef = new Map(
    Object.entries(images).map(([ref, config]) => [formatReference(parseReference(ref)), config]),
  );
  const asked: string[] = [];
  return {
    asked,
    async resolveImage(ref, platform): Promise<ResolvedImage> {
      const normalized = formatReference(parseReference(ref));
      asked.push(normalized);
      const config = byRef.get(normalized);
      if (!config)
        throw new (await import("../../errors/index.js")).TbuildError(
          "E_NOT_FOUND",
          `image ${normalized} not found`,
        );
      const image = {
        architecture: platform.architecture,
        os: platform.os,
        config: structuredClone(config),
        rootfs: { type: "layers" as const, diff_ids: [] },
        history: [{ created_by: `base layer of ${normalized}` }],
      };
      return { ref: normalized, digest: digestOf(image), platform, config: image };
    },
  };
}

export const busybox: ContainerConfig = {
  Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
  Cmd: ["sh"],
};
