/**
 * The OCI image-spec schemas (test/fixtures/oci-image-schema) as validators. The schemas refer to
 * each other by file name (`defs-descriptor.json#/…`) while declaring `id`s on another base, as
 * image-spec's own Go loader tolerates; here the `id`s are dropped and each schema is registered
 * under its file name, so every reference resolves to the file beside it.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import AjvDraft04 from "ajv-draft-04";
import { projectRoot } from "./cli.js";

const schemaDir = path.join(projectRoot, "test/fixtures/oci-image-schema");

function withoutIds(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutIds);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    // `id` is a keyword only where its value is a string; a property named "id" stays.
    if (key === "id" && typeof child === "string") continue;
    out[key] = withoutIds(child);
  }
  return out;
}

// The package is CommonJS: under nodenext its default import is the module, whose `default` is the class.
const Ajv = AjvDraft04.default;
const ajv = new Ajv({ allErrors: true, strict: false });
// Descriptor `urls` are declared `format: uri`; ajv-draft-04 ships no formats of its own.
ajv.addFormat("uri", /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$/);
for (const file of readdirSync(schemaDir).filter((f) => f.endsWith(".json"))) {
  ajv.addSchema(withoutIds(JSON.parse(readFileSync(path.join(schemaDir, file), "utf8"))) as object, file);
}

export type OciDocumentKind = "manifest" | "index" | "config" | "layout" | "descriptor";

const schemaFiles: Record<OciDocumentKind, string> = {
  manifest: "image-manifest-schema.json",
  index: "image-index-schema.json",
  config: "config-schema.json",
  layout: "image-layout-schema.json",
  descriptor: "content-descriptor.json",
};

/** The schema's complaints about a document (bytes or parsed), or [] when it is valid. */
export function schemaErrors(kind: OciDocumentKind, document: unknown): string[] {
  const value =
    document instanceof Uint8Array || typeof document === "string"
      ? JSON.parse(Buffer.from(document).toString("utf8"))
      : document;
  const validate = ajv.getSchema(schemaFiles[kind])!;
  if (validate(value)) return [];
  return (validate.errors ?? []).map((e) => `${kind}${e.instancePath} ${e.message}`);
}
