/**
 * Reads a word one Unicode code point at a time, the unit BuildKit's lexer works in, so that a
 * character outside the BMP (an emoji in a label) is never split into halves.
 */
export class Cursor {
  private readonly chars: string[];
  private position = 0;

  constructor(text: string) {
    this.chars = Array.from(text);
    // Go's text/scanner, which BuildKit reads words (and patterns) with, silently drops a byte order
    // mark at the very start of its input; a word that begins with one loses it there too.
    if (this.chars[0] === "\uFEFF") this.position = 1;
  }

  /** The next character without consuming it; undefined at the end. */
  peek(): string | undefined {
    return this.chars[this.position];
  }

  /** Consumes and returns the next character; undefined at the end. */
  next(): string | undefined {
    const ch = this.chars[this.position];
    if (ch !== undefined) this.position++;
    return ch;
  }

  /** How many characters (code points) have been consumed. */
  get offset(): number {
    return this.position;
  }

  get atEnd(): boolean {
    return this.position >= this.chars.length;
  }
}
