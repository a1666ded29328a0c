/**
 * The SPDX 2.3 JSON schema (test/fixtures/spdx-schema, draft-07) as a validator: the errors of a
 * document, [] when it conforms.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import AjvModule from "ajv";
import { projectRoot } from "../helpers/cli.js";

const schema = JSON.parse(
  readFileSync(path.join(projectRoot, "test/fixtures/spdx-schema/spdx-schema.json"), "utf8"),
) as object;
// The package is CommonJS: under nodenext its default import is the module, whose `default` is the class.
const Ajv = AjvModule.default;
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

export function spdxSchemaErrors(document: unknown): string[] {
  if (validate(document)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? ""}`);
}
