/**
 * Entries of a layer are sorted by their names' UTF-8 bytes: the comparison that avoids encoding
 * every name must order any two strings exactly as their encoded bytes do.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { byBytes } from "../../oci/archive/byte-order.js";

const encoded = (a: string, b: string) => Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe("byBytes", () => {
  it("orders any two strings as Buffer.compare orders their UTF-8 bytes", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), fc.string({ unit: "binary" }), (a, b) => {
        expect(Math.sign(byBytes(a, b))).toBe(encoded(a, b));
      }),
      { numRuns: 5000 },
    );
  });

  it("orders names sharing a prefix, where code units and bytes disagree", () => {
    // U+FF21 is one code unit above every surrogate, yet its UTF-8 bytes sort below U+1F600's.
    const names = ["a\u{1f600}", "a\uff21", "a", "ab", "a\u00e9", "B", "a\ud800"];
    const sorted = [...names].sort(byBytes);
    expect(sorted).toEqual([...names].sort((a, b) => encoded(a, b)));
    expect(sorted.indexOf("a\uff21")).toBeLessThan(sorted.indexOf("a\u{1f600}"));
  });
});
