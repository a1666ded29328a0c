/**
 * Text for one terminal row: a step's output may carry colours, cursor moves, carriage returns
 * (progress bars) and wide characters; the live view must know how many columns a line takes and
 * must never let a line wrap, or redrawing in place would go astray.
 */

// CSI (colours, cursor moves), OSC (titles, links) ended by BEL or ST, and two-byte escapes.
const ESCAPE = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}]$/u;

/**
 * What a terminal would show of one line of output: escape sequences dropped, tabs as a space,
 * and after a carriage return only what overwrote the line (the last state of a progress bar).
 */
export function terminalLine(text: string): string {
  const overwritten = text.replace(/\r+$/, "").split("\r").at(-1) ?? "";
  return overwritten.replace(ESCAPE, "").replace(/\t/g, " ").replace(CONTROL, "");
}

/** Columns one character takes: 0 for combining marks, 2 for East Asian wide characters and emoji. */
function charColumns(char: string): number {
  if (ZERO_WIDTH.test(char)) return 0;
  const code = char.codePointAt(0)!;
  const wide =
    (code >= 0x1100 && code <= 0x115f) ||
    (code >= 0x2e80 && code <= 0x303e) ||
    (code >= 0x3041 && code <= 0x33ff) ||
    (code >= 0x3400 && code <= 0x4dbf) ||
    (code >= 0x4e00 && code <= 0x9fff) ||
    (code >= 0xa000 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) ||
    (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) ||
    (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) ||
    (code >= 0x1f300 && code <= 0x1f64f) ||
    (code >= 0x1f900 && code <= 0x1f9ff) ||
    (code >= 0x20000 && code <= 0x3fffd);
  return wide ? 2 : 1;
}

/** Columns `text` (without escapes) takes on a terminal. */
export function columnsOf(text: string): number {
  let columns = 0;
  for (const char of text) columns += charColumns(char);
  return columns;
}

/** `text` cut to at most `columns` columns (never splitting a wide character). */
export function fitColumns(text: string, columns: number): string {
  let used = 0;
  let end = 0;
  for (const char of text) {
    const width = charColumns(char);
    if (used + width > columns) return text.slice(0, end);
    used += width;
    end += char.length;
  }
  return text;
}
