/**
 * The "Key: value" stanzas of Debian control files (dpkg's status database, copyright files) and
 * of Python's core metadata (RFC 822 headers): a stanza ends at a blank line, a line starting with
 * a space or tab continues the field above it. Field names are matched case-insensitively, as both
 * formats say; the first occurrence of a field wins, except where a caller asks for all of them.
 */

export type Stanza = Map<string, string[]>;

/** The stanzas of `text`, each a map of lower-cased field names to their values in order. */
export function parseStanzas(text: string, options: { maxStanzas?: number } = {}): Stanza[] {
  const stanzas: Stanza[] = [];
  let current: Stanza | undefined;
  let last: { values: string[] } | undefined;
  for (const line of text.split("\n")) {
    const trimmedEnd = line.replace(/\r$/, "");
    if (trimmedEnd.trim() === "") {
      if (current) {
        stanzas.push(current);
        if (options.maxStanzas !== undefined && stanzas.length >= options.maxStanzas) return stanzas;
      }
      current = undefined;
      last = undefined;
      continue;
    }
    if (/^[ \t]/.test(trimmedEnd)) {
      if (last) last.values[last.values.length - 1] += `\n${trimmedEnd.trim()}`;
      continue;
    }
    const colon = trimmedEnd.indexOf(":");
    if (colon <= 0) continue;
    current ??= new Map();
    const key = trimmedEnd.slice(0, colon).trim().toLowerCase();
    const values = current.get(key) ?? [];
    values.push(trimmedEnd.slice(colon + 1).trim());
    current.set(key, values);
    last = { values };
  }
  if (current) stanzas.push(current);
  return stanzas;
}

/** The first value of `field`, its first line only (a continued field's summary). */
export function field(stanza: Stanza, name: string): string | undefined {
  const value = stanza.get(name)?.[0];
  return value === undefined ? undefined : value.split("\n")[0];
}
