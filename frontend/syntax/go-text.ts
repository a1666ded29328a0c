/**
 * Go's string semantics, where BuildKit's parser depends on them.
 *
 * BuildKit reads a Dockerfile as bytes and mixes byte-wise and rune-wise processing, and its dumper
 * prints Go `%q` strings. To reproduce that exactly, a Dockerfile is held as a JavaScript string in
 * which every byte that is not part of valid UTF-8 is kept as a lone surrogate U+DC80..U+DCFF (the
 * "surrogateescape" convention): decoding loses nothing, `goQuote` prints such a byte as `\xNN` as
 * Go does, and byte-wise algorithms can get the original bytes back.
 */

const ASCII = /^[\x00-\x7f]*$/;
const utf8Encoder = new TextEncoder();

/** Go's `unicode.IsSpace`, for one UTF-16 code unit (every Go space is in the BMP). */
export function isGoSpace(code: number): boolean {
  if (code <= 0xff) return code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0x85 || code === 0xa0;
  return (
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000
  );
}

/** How many code units at the start of `s` are Go spaces. */
export function leadingGoSpace(s: string, from = 0): number {
  let i = from;
  while (i < s.length && isGoSpace(s.charCodeAt(i))) i++;
  return i - from;
}

/** Go's `strings.TrimSpace`. */
export function goTrimSpace(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isGoSpace(s.charCodeAt(start))) start++;
  while (end > start && isGoSpace(s.charCodeAt(end - 1))) end--;
  return start === 0 && end === s.length ? s : s.slice(start, end);
}

/** Go's `unicode.IsDigit` (decimal digits of any script). */
export function isGoDigit(ch: string): boolean {
  return /^\p{Nd}$/u.test(ch);
}

/** Go's `unicode.IsLetter`. */
export function isGoLetter(ch: string): boolean {
  return /^\p{L}$/u.test(ch);
}

/** True for a lone surrogate standing for an undecodable byte (see the module comment). */
function isEscapedByte(code: number): boolean {
  return code >= 0xdc80 && code <= 0xdcff;
}

function isSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdfff;
}

/**
 * Maps each code point as Go's `unicode.ToLower`/`ToUpper` do: one code point to one, never the
 * multi-character or context-dependent mappings of JavaScript's `toLowerCase` (İ, final sigma, ß).
 * An undecodable byte becomes U+FFFD, as in Go's `strings.Map`.
 */
function mapCase(s: string, lower: boolean): string {
  if (ASCII.test(s)) return lower ? s.toLowerCase() : s.toUpperCase();
  let out = "";
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (isSurrogate(code)) {
      out += "\ufffd";
    } else if (lower && code === 0x130) {
      out += "i";
    } else {
      const mapped = lower ? ch.toLowerCase() : ch.toUpperCase();
      out += [...mapped].length === 1 ? mapped : ch;
    }
  }
  return out;
}

/** Go's `strings.ToLower`. */
export function goToLower(s: string): string {
  return mapCase(s, true);
}

/** Go's `strings.ToUpper`. */
export function goToUpper(s: string): string {
  return mapCase(s, false);
}

const PRINTABLE_ABOVE_LATIN1 = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

/** Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space. */
function isGoPrint(code: number, ch: string): boolean {
  if (code <= 0xff) return (code >= 0x20 && code <= 0x7e) || (code >= 0xa1 && code !== 0xad);
  return PRINTABLE_ABOVE_LATIN1.test(ch);
}

const SIMPLE_ESCAPES: Record<number, string> = {
  7: "\\a",
  8: "\\b",
  12: "\\f",
  10: "\\n",
  13: "\\r",
  9: "\\t",
  11: "\\v",
};

const PLAIN_QUOTABLE = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** Go's `strconv.Quote` (what `%q` prints), reading undecodable bytes as the module comment says. */
export function goQuote(s: string): string {
  if (PLAIN_QUOTABLE.test(s)) return `"${s}"`;
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (code === 0x22 || code === 0x5c) {
      out += `\\${ch}`;
    } else if (isEscapedByte(code)) {
      out += `\\x${(code - 0xdc00).toString(16).padStart(2, "0")}`;
    } else if (isSurrogate(code)) {
      // Only a string built outside the parser can hold one; Node would write it as U+FFFD.
      out += "\ufffd";
    } else if (isGoPrint(code, ch)) {
      out += ch;
    } else if (SIMPLE_ESCAPES[code] !== undefined) {
      out += SIMPLE_ESCAPES[code];
    } else if (code < 0x20 || code === 0x7f) {
      out += `\\x${code.toString(16).padStart(2, "0")}`;
    } else if (code < 0x10000) {
      out += `\\u${code.toString(16).padStart(4, "0")}`;
    } else {
      out += `\\U${code.toString(16).padStart(8, "0")}`;
    }
  }
  return `${out}"`;
}

/**
 * Decodes UTF-8 as Go reads it, byte by byte: every byte that `utf8.DecodeRune` rejects becomes
 * U+DC80..U+DCFF, so that the original bytes can be recovered.
 */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return decodeUtf8Slowly(bytes);
  }
}

function decodeUtf8Slowly(bytes: Uint8Array): string {
  const units: number[] = [];
  let out = "";
  const flush = () => {
    out += String.fromCharCode(...units);
    units.length = 0;
  };
  const continuation = (i: number, low = 0x80, high = 0xbf) =>
    i < bytes.length && bytes[i]! >= low && bytes[i]! <= high;
  for (let i = 0; i < bytes.length; ) {
    const b0 = bytes[i]!;
    let width = 0;
    let code = 0;
    if (b0 < 0x80) {
      width = 1;
      code = b0;
    } else if (b0 >= 0xc2 && b0 <= 0xdf && continuation(i + 1)) {
      width = 2;
      code = ((b0 & 0x1f) << 6) | (bytes[i + 1]! & 0x3f);
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      const low = b0 === 0xe0 ? 0xa0 : 0x80;
      const high = b0 === 0xed ? 0x9f : 0xbf;
      if (continuation(i + 1, low, high) && continuation(i + 2)) {
        width = 3;
        code = ((b0 & 0x0f) << 12) | ((bytes[i + 1]! & 0x3f) << 6) | (bytes[i + 2]! & 0x3f);
      }
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      const low = b0 === 0xf0 ? 0x90 : 0x80;
      const high = b0 === 0xf4 ? 0x8f : 0xbf;
      if (continuation(i + 1, low, high) && continuation(i + 2) && continuation(i + 3)) {
        width = 4;
        code =
          ((b0 & 0x07) << 18) |
          ((bytes[i + 1]! & 0x3f) << 12) |
          ((bytes[i + 2]! & 0x3f) << 6) |
          (bytes[i + 3]! & 0x3f);
      }
    }
    if (width === 0) {
      units.push(0xdc00 + b0);
      i += 1;
    } else {
      if (code > 0xffff) {
        units.push(0xd800 + ((code - 0x10000) >> 10), 0xdc00 + ((code - 0x10000) & 0x3ff));
      } else {
        units.push(code);
      }
      i += width;
    }
    if (units.length >= 4096) flush();
  }
  flush();
  return out;
}

/**
 * Replaces lone surrogates that do not stand for a byte with U+FFFD, as writing the string to a
 * file would, so that a string from an API caller means the same bytes as one read from disk.
 */
export function normalizeSurrogates(s: string): string {
  if (s.isWellFormed()) return s;
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, (unit) =>
    isEscapedByte(unit.charCodeAt(0)) ? unit : "\ufffd",
  );
}

/** The UTF-8 length of `s` in bytes, counting an undecodable byte as one. */
export function utf8Length(s: string): number {
  let length = 0;
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    if (code < 0x80) length += 1;
    else if (code < 0x800) length += 2;
    else if (isEscapedByte(code)) length += 1;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < s.length) {
      length += 4;
      i++;
    } else length += 3;
  }
  return length;
}

/**
 * The bytes of `s` as a "byte string": one code unit per byte, each below 256. Go code that indexes
 * a string by byte (and, as BuildKit's flag parser does, turns each byte into a rune) is reproduced
 * by indexing this.
 */
export function toByteString(s: string): string {
  if (ASCII.test(s)) return s;
  let out = "";
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (isEscapedByte(code)) out += String.fromCharCode(code - 0xdc00);
    else out += String.fromCharCode(...utf8Encoder.encode(isSurrogate(code) ? "\ufffd" : ch));
  }
  return out;
}

/** The inverse of `toByteString`: decodes a byte string as UTF-8 (see `decodeUtf8`). */
export function fromByteString(bytes: string): string {
  if (ASCII.test(bytes)) return bytes;
  return decodeUtf8(Uint8Array.from(bytes, (ch) => ch.charCodeAt(0)));
}
