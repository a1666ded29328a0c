/**
 * `type=image` (and `-t`, `--push`, `type=registry`): the image named in the local store under
 * each name, then, with `push=true`, sent to each name's registry. The push sends the stored
 * manifest byte for byte, so the pushed digest is the stored one.
 */
import { UsageError } from "../errors/index.js";
import type { Exporter } from "./exporter.js";

export const imageExporter: Exporter = async (job) => {
  if (job.request.push === true && job.names.length === 0) {
    throw new UsageError("push needs a name to push to: give -t NAME, or name=NAME in --output");
  }
  const image = await job.image({ mediaTypes: "oci", compressLayers: true });
  // A cancelled build (Ctrl-C, or a rootless tbuild whose outer process was killed) names nothing.
  job.options.signal?.throwIfAborted();
  for (const name of job.names) await job.store.images.put(name, image.descriptor);
  if (job.request.push === true) {
    const signal = job.options.signal;
    for (const name of job.names) {
      // The registry client is loaded only for a push.
      const { pushImage } = await import("../oci/registry/push.js");
      await pushImage(job.store, name, {
        ...(job.options.warn ? { warn: job.options.warn } : {}),
        ...job.options.registry,
        ...(signal ? { signal } : {}),
      });
    }
  }
  return image;
};
