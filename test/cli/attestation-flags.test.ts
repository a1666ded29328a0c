/**
 * `--provenance`, `--sbom` and `--attest` as buildx reads them, into the request's attestations;
 * and the command line's bare `--provenance` (no value) is `--provenance=true`, never eating the
 * CONTEXT after it. Malformed values are usage errors naming the flag.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { checkBuildRequest } from "../../build/request.js";
import { parseAttestationFlags } from "../../cli/attestations.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const parse = (flags: { provenance?: string; sbom?: string; attest?: string[] }) =>
  parseAttestationFlags({ attest: [], ...flags });

describe("attestation flags", () => {
  it("read as buildx reads them", () => {
    expect(parse({})).toBeUndefined();
    expect(parse({ provenance: "true" })).toEqual({ provenance: { mode: "min", version: "v1" } });
    expect(parse({ provenance: "false" })).toEqual({ provenance: false });
    expect(parse({ provenance: "mode=max,version=v0.2" })).toEqual({
      provenance: { mode: "max", version: "v0.2" },
    });
    expect(parse({ attest: ["type=provenance,mode=max"] })).toEqual({
      provenance: { mode: "max", version: "v1" },
    });
    expect(parse({ attest: ["type=provenance,disabled=true"] })).toEqual({ provenance: false });
    expect(parse({ attest: ["type=sbom"] })).toEqual({ sbom: {} });
    expect(parse({ sbom: "false" })).toEqual({ sbom: false });
  });

  it("refuses malformed values, naming the flag", () => {
    expect(() => parse({ provenance: "mode=full" })).toThrow(
      /--provenance "mode=full": mode must be min or max/,
    );
    expect(() => parse({ provenance: "version=v2" })).toThrow(/version must be v1 or v0.2/);
    expect(() => parse({ attest: ["type=signature"] })).toThrow(
      /--attest "type=signature": unknown type "signature"/,
    );
    expect(() => parse({ attest: ["mode=max"] })).toThrow(/no type=/);
    expect(() => parse({ provenance: "builder=x" })).toThrow(/not builder=/);
  });

  it("a library request's attestations are checked as the flags are: a wrong one names the field", () => {
    const good = {
      context: ".",
      attestations: { provenance: { mode: "max", version: "v0.2" }, sbom: false },
    };
    expect(checkBuildRequest(good)).toBe(good);
    for (const attestations of [
      { provenance: { mode: "full", version: "v1" } },
      { provenance: true },
      { slsa: {} },
    ]) {
      expect(() => checkBuildRequest({ context: ".", attestations })).toThrow(
        /build request: "attestations" must be/,
      );
    }
  });

  it("a bare --provenance before CONTEXT takes no value from it; a bad one is a usage error (exit 2)", () => {
    const store = tempDir("attest-flags-store");
    const ctx = tempDir("attest-flags-ctx");
    const bare = tbuild(["debug", "graph", "--provenance", ctx], { env: { TBUILD_ROOT: store } });
    // CONTEXT stayed the context: its (missing) Dockerfile is what is reported.
    expect(bare.stderr).toContain(`cannot read the Dockerfile ${path.join(ctx, "Dockerfile")}`);
    const bad = tbuild(["build", "--provenance=mode=full", ctx], { env: { TBUILD_ROOT: store } });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--provenance "mode=full": mode must be min or max, not "full"');
  });
});
