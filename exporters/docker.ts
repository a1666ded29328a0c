/**
 * `type=docker`: the image as a `docker save` archive, which `docker load` and `podman load` read:
 * Docker's schema2 media types by default (`oci-mediatypes=true` for OCI ones), names from the
 * request. Such an archive holds every layer uncompressed, so layers are not compressed for it.
 */
import { TbuildError } from "../errors/index.js";
import { dockerArchive } from "../oci/archive/docker-archive.js";
import { writeBytesTo } from "./destination.js";
import type { Exporter } from "./exporter.js";

export const dockerExporter: Exporter = async (job) => {
  if (job.request.tar === false) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "type=docker,tar=false is not supported yet: use type=oci,tar=false for a directory",
    );
  }
  if (job.request.compression !== undefined || job.request.compressionLevel !== undefined) {
    job.warn(
      "type=docker writes layers uncompressed, as docker save does: compression= does not change the archive",
    );
  }
  const image = await job.image({ mediaTypes: "docker", compressLayers: false });
  await writeBytesTo(
    dockerArchive([{ names: job.names, image: image.image }]),
    job.request.dest ?? "-",
    "type=docker",
    job.destinationOptions(),
  );
  return image;
};
