/**
 * Tar order: names compared as their UTF-8 bytes, which is how Go's sort (BuildKit, containerd)
 * orders a directory's entries, and so what layer digests are made of.
 */

/**
 * `a` against `b` by their UTF-8 bytes, without encoding them: UTF-8 byte order is code point
 * order, which UTF-16 code unit order (JavaScript's own) matches everywhere but where a surrogate
 * meets a unit from U+E000 up. Only strings whose first difference involves such units are encoded.
 */
export function byBytes(a: string, b: string): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 && y < 0xd800) return x - y;
    return Buffer.compare(Buffer.from(a), Buffer.from(b));
  }
  return a.length - b.length;
}
