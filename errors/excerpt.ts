/**
 * Excerpts of what a user gave, inside error messages: a Dockerfile line, a build-arg value, a
 * registry's answer can each be megabytes long, and an error echoing one whole buries the point
 * (and a terminal). A line shows its first few hundred characters and counts the rest; a message
 * shows its first lines and counts the others. The start of a line, where messages put the
 * file:line:column, is always kept.
 */

/** Characters of one line that an error message shows. */
export const EXCERPT_CHARS = 400;
/** Characters of a source line shown around a column: with its marks, within one message line. */
const WINDOW_CHARS = 240;
/** Lines of one error message that are shown. */
export const EXCERPT_LINES = 40;

/** The mark a capped line ends with: a line already capped is not capped again. */
const CAPPED = /… \(\d+ more bytes\)$/;

/** `line`, or its first `max` characters and `… (N more bytes)` (bytes of UTF-8). */
export function capLine(line: string, max = EXCERPT_CHARS): string {
  if (line.length <= max) return line;
  if (line.length <= max + 40 && CAPPED.test(line)) return line;
  const end = cutPoint(line, max);
  return `${line.slice(0, end)}… (${Buffer.byteLength(line.slice(end))} more bytes)`;
}

/** A message with each line capped, and at most `maxLines` lines (then `… (N more lines)`). */
export function capMessage(message: string, maxLines = EXCERPT_LINES): string {
  if (message.length <= EXCERPT_CHARS && !message.includes("\n")) return message;
  const lines = message.split("\n");
  const shown = lines.slice(0, maxLines).map((line) => capLine(line));
  if (lines.length > maxLines) shown.push(`… (${lines.length - maxLines} more lines)`);
  return shown.join("\n");
}

/**
 * The part of `line` to show under an error at `column` (1-based): the whole line when short,
 * else a window of `max` characters around the column, marked `…` where it was cut, with the
 * column within the window (for a caret under it).
 */
export function excerptAround(
  line: string,
  column: number,
  max = WINDOW_CHARS,
): { text: string; column: number } {
  if (line.length <= max) return { text: line, column };
  const wanted = Math.max(0, Math.min(column - 1, line.length));
  const start =
    wanted < max / 2 ? 0 : cutPoint(line, Math.min(wanted - Math.floor(max / 4), line.length - max));
  const end = cutPoint(line, start + max);
  const before = start > 0 ? `… (${Buffer.byteLength(line.slice(0, start))} bytes) ` : "";
  const after = end < line.length ? `… (${Buffer.byteLength(line.slice(end))} more bytes)` : "";
  return { text: `${before}${line.slice(start, end)}${after}`, column: before.length + wanted - start + 1 };
}

/** `at`, moved back one when it would split a surrogate pair. */
function cutPoint(text: string, at: number): number {
  const code = text.charCodeAt(at - 1);
  return code >= 0xd800 && code <= 0xdbff ? at - 1 : at;
}
