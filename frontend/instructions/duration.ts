/**
 * Go's duration syntax (`time.ParseDuration`), which HEALTHCHECK flags use: a sequence of decimal
 * numbers, each with a unit (`1m30s`, `1.5h`, `500ms`), an optional sign, or a bare `0`.
 */

const NANOSECONDS_PER_UNIT: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  "\u00b5s": 1_000n, // micro sign
  "\u03bcs": 1_000n, // Greek mu
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const MAX_INT64 = 2n ** 63n - 1n;

export class DurationSyntaxError extends Error {}

/** The duration in nanoseconds; throws DurationSyntaxError with Go's wording. */
export function parseGoDuration(text: string): number {
  const quoted = JSON.stringify(text);
  let rest = text;
  let negative = false;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    negative = rest[0] === "-";
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") throw new DurationSyntaxError(`invalid duration ${quoted}`);
  let total = 0n;
  while (rest !== "") {
    const number = /^(\d*)(?:\.(\d*))?/.exec(rest)!;
    const whole = number[1] ?? "";
    const fraction = number[2] ?? "";
    if (whole === "" && fraction === "") throw new DurationSyntaxError(`invalid duration ${quoted}`);
    rest = rest.slice(number[0].length);
    const unitMatch = /^[^\d.]*/.exec(rest)!;
    const unit = unitMatch[0];
    rest = rest.slice(unit.length);
    if (unit === "") throw new DurationSyntaxError(`missing unit in duration ${quoted}`);
    const scale = NANOSECONDS_PER_UNIT[unit];
    if (scale === undefined) {
      throw new DurationSyntaxError(`unknown unit ${JSON.stringify(unit)} in duration ${quoted}`);
    }
    let value = BigInt(whole === "" ? "0" : whole) * scale;
    if (fraction !== "") {
      // Like Go, the fractional part goes through floating point and is truncated.
      const digits = fraction.slice(0, 18);
      value += BigInt(Math.trunc(Number(digits) * (Number(scale) / 10 ** digits.length)));
    }
    total += value;
    if (total > MAX_INT64) throw new DurationSyntaxError(`invalid duration ${quoted}`);
  }
  return Number(negative ? -total : total);
}
