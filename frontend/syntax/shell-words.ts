/**
 * BuildKit's shell-word splitter, as its parser uses it to find heredoc delimiters: no variables are
 * set and unset ones are kept as written (`$x`, `${x:-y}`), the escape character is always the
 * backslash, and quotes and escapes can be kept in the words ("raw") or removed.
 *
 * This is not the expansion the lowering uses for instruction arguments; it only reproduces which
 * words the parser sees, including its quirks (a nested `${...}` is re-split on blanks).
 */
import { goQuote, isGoDigit, isGoLetter, isGoSpace } from "./go-text.js";

export class ShellSyntaxError extends Error {}

export interface ShellWordOptions {
  /** Keep quote characters in the words. */
  rawQuotes: boolean;
  /** Keep escape characters in the words. */
  rawEscapes: boolean;
}

const EOF = -1;
const BACKSLASH = 0x5c;
const DOLLAR = 0x24;
const SINGLE_QUOTE = 0x27;
const DOUBLE_QUOTE = 0x22;
const LEFT_BRACE = 0x7b;
const RIGHT_BRACE = 0x7d;
const COLON = 0x3a;
const SLASH = 0x2f;
const LESS_THAN = 0x3c;
const SPECIAL_PARAMETERS = new Set([..."@*#?-$!0"].map((c) => c.charCodeAt(0)));

function runeText(code: number): string {
  // Go's `string(rune)` of EOF (-1) is U+FFFD, and so is that of an undecodable byte.
  return code < 0 || (code >= 0xd800 && code <= 0xdfff) ? "\ufffd" : String.fromCodePoint(code);
}

/** Collects words as the splitter finds them; a word only ends at a blank outside quotes. */
class WordCollector {
  private word = "";
  private inWord = false;
  private readonly words: string[] = [];

  addChar(code: number): void {
    if (isGoSpace(code)) {
      if (this.inWord && this.word.length !== 0) {
        this.words.push(this.word);
        this.word = "";
        this.inWord = false;
      }
    } else {
      this.addRawChar(code);
    }
  }

  addRawChar(code: number): void {
    this.word += runeText(code);
    this.inWord = true;
  }

  addString(text: string): void {
    for (const ch of text) this.addChar(ch.codePointAt(0)!);
  }

  addRawString(text: string): void {
    this.word += text;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = "";
      this.inWord = false;
    }
    return this.words;
  }
}

class ShellWordScanner {
  private readonly source: string;
  private readonly rawQuotes: boolean;
  private rawEscapes: boolean;
  private pos = 0;

  constructor(source: string, rawQuotes: boolean, rawEscapes: boolean) {
    this.source = source;
    this.rawQuotes = rawQuotes;
    this.rawEscapes = rawEscapes;
    // Go's text/scanner skips a byte order mark at the very start.
    if (source.charCodeAt(0) === 0xfeff) this.pos = 1;
  }

  peek(): number {
    if (this.pos >= this.source.length) return EOF;
    const code = this.source.codePointAt(this.pos)!;
    return code >= 0xd800 && code <= 0xdfff ? 0xfffd : code;
  }

  next(): number {
    if (this.pos >= this.source.length) return EOF;
    const code = this.peek();
    this.pos += this.source.codePointAt(this.pos)! > 0xffff ? 2 : 1;
    return code;
  }

  /** Reads up to `stop` (or the end), returning the text read and the words in it. */
  readUntil(stop: number, rawEscapes: boolean): { text: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let text = "";
      const words = new WordCollector();
      while (this.peek() !== EOF) {
        const code = this.peek();
        if (stop !== EOF && code === stop) {
          this.next();
          return { text, words: words.finish() };
        }
        if (code === DOLLAR) {
          const value = this.readDollar();
          text += value;
          words.addString(value);
        } else if (code === LESS_THAN) {
          const value = this.readPossibleHeredoc();
          text += value;
          words.addRawString(value);
        } else if (code === SINGLE_QUOTE || code === DOUBLE_QUOTE) {
          const quoted = code === SINGLE_QUOTE ? this.readSingleQuoted() : this.readDoubleQuoted();
          text += quoted;
          words.addRawString(quoted);
        } else {
          let current = this.next();
          if (current === BACKSLASH) {
            if (this.rawEscapes) {
              words.addRawChar(current);
              text += "\\";
            }
            current = this.next();
            if (current === EOF) break;
            words.addRawChar(current);
          } else {
            words.addChar(current);
          }
          text += runeText(current);
        }
      }
      if (stop !== EOF) {
        throw new ShellSyntaxError(
          `unexpected end of statement while looking for matching ${runeText(stop)}`,
        );
      }
      return { text, words: words.finish() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private readSingleQuoted(): string {
    let text = "";
    this.next();
    if (this.rawQuotes) text += "'";
    for (;;) {
      const code = this.next();
      if (code === EOF)
        throw new ShellSyntaxError("unexpected end of statement while looking for matching single-quote");
      if (code === SINGLE_QUOTE) {
        if (this.rawQuotes) text += "'";
        return text;
      }
      text += runeText(code);
    }
  }

  private readDoubleQuoted(): string {
    let text = "";
    this.next();
    if (this.rawQuotes) text += '"';
    for (;;) {
      const code = this.peek();
      if (code === EOF)
        throw new ShellSyntaxError("unexpected end of statement while looking for matching double-quote");
      if (code === DOUBLE_QUOTE) {
        this.next();
        if (this.rawQuotes) text += '"';
        return text;
      }
      if (code === DOLLAR) {
        text += this.readDollar();
        continue;
      }
      let current = this.next();
      if (current === BACKSLASH) {
        if (this.rawEscapes) text += "\\";
        const following = this.peek();
        if (following === EOF) continue;
        if (following === DOUBLE_QUOTE || following === DOLLAR || following === BACKSLASH)
          current = this.next();
      }
      text += runeText(current);
    }
  }

  /**
   * `<`, or `<<` with the blanks after it: they stay in the word, so that `<< EOF` is one word and
   * names a heredoc as `<<EOF` does.
   */
  private readPossibleHeredoc(): string {
    this.next();
    if (this.peek() !== LESS_THAN) return "<";
    this.next();
    let text = "<<";
    while (this.peek() === 0x20 || this.peek() === 0x09 || this.peek() === 0x0d)
      text += runeText(this.next());
    return text;
  }

  /** `$name` or `${...}`: with no variables set, BuildKit's parser keeps them as written. */
  private readDollar(): string {
    this.next();
    if (this.peek() !== LEFT_BRACE) {
      const name = this.readName();
      return name === "" ? "$" : `$${name}`;
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new ShellSyntaxError("syntax error: missing '}'");
    if (first === LEFT_BRACE || first === RIGHT_BRACE || first === COLON) {
      throw new ShellSyntaxError("syntax error: bad substitution");
    }
    const name = this.readName();
    let modifier = this.next();
    let modifierText = runeText(modifier);
    if (modifier === RIGHT_BRACE) return `\${${name}}`;
    if (modifier === COLON) {
      modifier = this.next();
      modifierText += runeText(modifier);
    } else if (!"+-?#%".includes(runeText(modifier)) && modifier !== SLASH) {
      throw new ShellSyntaxError(`unsupported modifier (${modifierText}) in substitution`);
    }
    if (modifier === SLASH && modifierText === "/") {
      if (this.peek() === SLASH) this.next();
      const pattern = this.readNested(SLASH, true, "syntax error: missing '/' in ${}");
      const replacement = this.readNested(RIGHT_BRACE, true, "syntax error: missing '}'");
      return `\${${name}/${pattern}/${replacement}}`;
    }
    // After `:` any character is taken as the modifier; an unset variable keeps the text as written.
    const word = this.readNested(
      RIGHT_BRACE,
      modifier === 0x23 || modifier === 0x25,
      "syntax error: missing '}'",
    );
    return `\${${name}${modifierText}${word}}`;
  }

  private readNested(stop: number, rawEscapes: boolean, atEndMessage: string): string {
    try {
      return this.readUntil(stop, rawEscapes).text;
    } catch (err) {
      if (err instanceof ShellSyntaxError && this.peek() === EOF) throw new ShellSyntaxError(atEndMessage);
      throw err;
    }
  }

  private readName(): string {
    let name = "";
    while (this.peek() !== EOF) {
      const code = this.peek();
      const ch = runeText(code);
      if (name === "" && isGoDigit(ch)) {
        while (this.peek() !== EOF && isGoDigit(runeText(this.peek()))) name += runeText(this.next());
        return name;
      }
      if (name === "" && SPECIAL_PARAMETERS.has(code)) return runeText(this.next());
      if (!isGoLetter(ch) && !isGoDigit(ch) && code !== 0x5f) break;
      name += runeText(this.next());
    }
    return name;
  }
}

/** The words BuildKit's parser sees in `source`. Throws ShellSyntaxError with BuildKit's message. */
export function splitShellWords(source: string, options: ShellWordOptions): string[] {
  const scanner = new ShellWordScanner(source, options.rawQuotes, options.rawEscapes);
  try {
    return scanner.readUntil(EOF, options.rawEscapes).words;
  } catch (err) {
    if (err instanceof ShellSyntaxError)
      throw new ShellSyntaxError(`failed to process ${goQuote(source)}: ${err.message}`);
    throw err;
  }
}
