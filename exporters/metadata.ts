/**
 * `--iidfile` and `--metadata-file`, in buildx's formats: the image ID alone (tbuild's image ID,
 * as `tbuild images` shows it, is the manifest digest), and a JSON object with BuildKit's
 * exporter response keys.
 */
import { writeFile } from "node:fs/promises";
import type { Descriptor } from "../oci/spec.js";
import { cannotWrite } from "./destination.js";

export interface ExportOutcome {
  /** The manifest digest: `containerimage.digest`, and the image ID. */
  digest: string;
  /** `containerimage.config.digest`; none for an index of several platforms. */
  configDigest?: string;
  /** The manifest's descriptor: `containerimage.descriptor`. */
  descriptor: Descriptor;
  /** Normalized names the image was stored, pushed or archived under: `image.name`. */
  names: string[];
}

/** What the files need of an outcome (the descriptor is written when known). */
export type OutcomeFields = Omit<ExportOutcome, "descriptor"> & { descriptor?: Descriptor };

/** `--iidfile`: the digest alone, without a newline, as docker writes it. */
export async function writeIidFile(file: string, outcome: OutcomeFields): Promise<void> {
  try {
    await writeFile(file, outcome.digest);
  } catch (err) {
    throw cannotWrite(err, file, "--iidfile");
  }
}

/** `--metadata-file`: what buildx writes there, for the keys tbuild knows. */
export async function writeMetadataFile(file: string, outcome: OutcomeFields): Promise<void> {
  const { descriptor } = outcome;
  const metadata: Record<string, unknown> = {
    ...(outcome.configDigest !== undefined ? { "containerimage.config.digest": outcome.configDigest } : {}),
    ...(descriptor !== undefined
      ? {
          "containerimage.descriptor": {
            mediaType: descriptor.mediaType,
            digest: descriptor.digest,
            size: descriptor.size,
          },
        }
      : {}),
    "containerimage.digest": outcome.digest,
    ...(outcome.names.length > 0 ? { "image.name": outcome.names.join(",") } : {}),
  };
  try {
    await writeFile(file, `${JSON.stringify(metadata, null, 2)}\n`);
  } catch (err) {
    throw cannotWrite(err, file, "--metadata-file");
  }
}
