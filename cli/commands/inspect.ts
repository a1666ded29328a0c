import { readAttestations } from "../../attest/read.js";
import { loadConfig, registryOptions } from "../../build/config.js";
import { TbuildError, UsageError } from "../../errors/index.js";
import { readImage, readImageForPlatform, readImageIndex } from "../../oci/image.js";
import { hostPlatform, parsePlatform } from "../../oci/platform.js";
import { isIndexMediaType } from "../../oci/spec.js";
import { ImageNotFoundError, type Store } from "../../oci/store/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImage, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild inspect takes one image (name or ID)");
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : hostPlatform();
  const store = await openCommandStore(ctx);
  if (args.values.provenance === true && args.values.sbom === true) {
    throw new UsageError("--provenance and --sbom: give one at a time");
  }
  if (args.values.provenance === true) return printAttestations(store, text, ctx, PROVENANCE);
  if (args.values.sbom === true) return printAttestations(store, text, ctx, SBOM);
  const record = await findLocalImage(store, text);
  const multiPlatform = isIndexMediaType(record.descriptor.mediaType);
  const index = multiPlatform ? (await readImageIndex(store.content, record.descriptor)).index : undefined;
  // A multi-platform image shows its index, then the manifest and config of the platform asked for.
  const image = multiPlatform
    ? await readImageForPlatform(store.content, record.descriptor, platform, record.name)
    : await readImage(store.content, record.descriptor);
  const result = {
    name: record.name,
    descriptor: record.descriptor,
    ...(index !== undefined ? { index, platformDescriptor: image.descriptor } : {}),
    manifest: image.manifest,
    config: image.config,
  };
  ctx.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

/** What `--provenance` and `--sbom` print: statements whose predicate type starts so. */
interface AttestationKind {
  predicatePrefix: string;
  missing: string;
}

const PROVENANCE: AttestationKind = {
  predicatePrefix: "https://slsa.dev/provenance/",
  missing: "provenance attestation: build it with --provenance (a pushed image gets one by default)",
};

const SBOM: AttestationKind = {
  predicatePrefix: "https://spdx.dev/Document",
  missing: "SBOM attestation: build it with --sbom",
};

/**
 * `--provenance`, `--sbom`: the image's statements of that kind, by platform: of the stored image,
 * else of the image in its registry.
 */
async function printAttestations(
  store: Store,
  text: string,
  ctx: CommandContext,
  kind: AttestationKind,
): Promise<number> {
  const local = await findLocalImage(store, text).catch((err: unknown) => {
    if (err instanceof ImageNotFoundError) return undefined;
    throw err;
  });
  let statements: Awaited<ReturnType<typeof readAttestations>>;
  let name: string;
  if (local !== undefined) {
    name = local.name;
    const fromStore = (digest: string) => store.content.readBytes(digest);
    statements = await readAttestations(
      { manifest: fromStore, blob: fromStore },
      local.descriptor,
      kind.predicatePrefix,
    );
  } else {
    const { parseReference, formatReference } = await import("../../oci/reference.js");
    const { RegistrySession } = await import("../../oci/registry/session.js");
    const { pullEndpoints } = await import("../../oci/registry/hosts.js");
    const ref = parseReference(text);
    name = formatReference(ref);
    const options = registryOptions(await loadConfig(ctx.env), { env: ctx.env, signal: ctx.signal });
    const session = new RegistrySession(pullEndpoints(ref.domain, options.hosts).slice(-1), options);
    try {
      const client = session.clients[0]!;
      const top = await client.getManifest(ref.path, ref.digest ?? ref.tag!);
      const manifest = async (digest: string) =>
        digest === top.digest ? top.bytes : (await client.getManifest(ref.path, digest)).bytes;
      const blob = async (digest: string) => {
        const chunks: Uint8Array[] = [];
        for await (const chunk of client.blobChunks(ref.path, digest)) chunks.push(chunk);
        return Buffer.concat(chunks);
      };
      statements = await readAttestations({ manifest, blob }, top, kind.predicatePrefix);
    } finally {
      session.close();
    }
  }
  if (Object.keys(statements).length === 0) {
    throw new TbuildError("E_NO_ATTESTATION", `${name} has no ${kind.missing}`);
  }
  const byPlatform = Object.fromEntries(
    Object.entries(statements).map(([platform, list]) => [platform, list.length === 1 ? list[0] : list]),
  );
  ctx.stdout.write(`${JSON.stringify(byPlatform, null, 2)}\n`);
  return 0;
}
