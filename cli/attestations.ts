/**
 * `--provenance`, `--sbom` and `--attest`, read as buildx reads them, into the request's
 * AttestationRequest: `--provenance` alone or `=true` is `mode=min`; `=false` turns off the
 * default (a pushed image's provenance); `=mode=max,version=v0.2` chooses; `--attest
 * type=provenance,...` says the same, `type=provenance,disabled=true` turns it off. `--sbom` and
 * `--attest type=sbom` are parsed into `sbom`, which the build refuses until it makes one.
 */
import type { AttestationRequest } from "../attest/attestation.js";
import { TbuildError, UsageError } from "../errors/index.js";

type Provenance = NonNullable<AttestationRequest["provenance"]>;
type Sbom = NonNullable<AttestationRequest["sbom"]>;

const TRUE = ["1", "t", "T", "true", "TRUE", "True"];
const FALSE = ["0", "f", "F", "false", "FALSE", "False"];

function fieldsOf(spec: string, flag: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const field of spec.split(",")) {
    if (field.trim() === "") continue;
    const eq = field.indexOf("=");
    if (eq <= 0) throw new UsageError(`${flag} "${spec}": "${field}" is not key=value`);
    const key = field.slice(0, eq).trim().toLowerCase();
    if (fields.has(key)) throw new UsageError(`${flag} "${spec}": ${key} is given twice`);
    fields.set(key, field.slice(eq + 1).trim());
  }
  return fields;
}

function provenanceFrom(fields: Map<string, string>, spec: string, flag: string): Provenance {
  const provenance: Provenance & object = { mode: "min", version: "v1" };
  for (const [key, value] of fields) {
    if (key === "disabled") {
      if (TRUE.includes(value)) return false;
      if (!FALSE.includes(value)) throw new UsageError(`${flag} "${spec}": disabled must be true or false`);
    } else if (key === "mode") {
      if (value !== "min" && value !== "max")
        throw new UsageError(`${flag} "${spec}": mode must be min or max, not "${value}"`);
      provenance.mode = value;
    } else if (key === "version") {
      if (value !== "v1" && value !== "v0.2")
        throw new UsageError(`${flag} "${spec}": version must be v1 or v0.2, not "${value}"`);
      provenance.version = value;
    } else {
      throw new UsageError(
        `${flag} "${spec}": provenance takes mode=min|max and version=v1|v0.2, not ${key}=`,
      );
    }
  }
  return provenance;
}

function sbomFrom(fields: Map<string, string>, spec: string, flag: string): Sbom {
  for (const [key, value] of fields) {
    if (key === "disabled") {
      if (TRUE.includes(value)) return false;
      if (!FALSE.includes(value)) throw new UsageError(`${flag} "${spec}": disabled must be true or false`);
    } else if (key === "generator") {
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `${flag} "${spec}": generator= (a scanner image) is not supported: tbuild makes the SBOM itself, from the image's package databases; drop generator=`,
      );
    } else if (key !== "type") {
      throw new UsageError(`${flag} "${spec}": unknown SBOM option "${key}" (known: disabled)`);
    }
  }
  return {};
}

/** `--provenance VALUE`: true, false, or `mode=...,version=...`. */
export function parseProvenanceFlag(value: string): Provenance {
  if (TRUE.includes(value)) return { mode: "min", version: "v1" };
  if (FALSE.includes(value)) return false;
  return provenanceFrom(fieldsOf(value, "--provenance"), value, "--provenance");
}

/** `--sbom VALUE`: true, false, or options. */
export function parseSbomFlag(value: string): Sbom {
  if (TRUE.includes(value)) return {};
  if (FALSE.includes(value)) return false;
  return sbomFrom(fieldsOf(value, "--sbom"), value, "--sbom");
}

/** The request's attestations from the three flags; undefined when none was given (the default applies). */
export function parseAttestationFlags(flags: {
  provenance?: string | undefined;
  sbom?: string | undefined;
  attest: string[];
}): AttestationRequest | undefined {
  const request: AttestationRequest = {};
  for (const spec of flags.attest) {
    const fields = fieldsOf(spec, "--attest");
    const type = fields.get("type");
    fields.delete("type");
    if (type === "provenance") request.provenance = provenanceFrom(fields, spec, "--attest");
    else if (type === "sbom") request.sbom = sbomFrom(fields, spec, "--attest");
    else
      throw new UsageError(
        `--attest "${spec}": ${type === undefined ? "no type=" : `unknown type "${type}"`}: give type=provenance or type=sbom`,
      );
  }
  if (flags.provenance !== undefined) request.provenance = parseProvenanceFlag(flags.provenance);
  if (flags.sbom !== undefined) request.sbom = parseSbomFlag(flags.sbom);
  return Object.keys(request).length > 0 ? request : undefined;
}
