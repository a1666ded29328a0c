import { isGoSpace } from "./go-text.js";
import type { EscapeToken } from "./instruction.js";

export interface Word {
  text: string;
  /** Code-unit offset of the word's first character in the parsed text. */
  offset: number;
}

const SINGLE_QUOTE = 0x27;
const DOUBLE_QUOTE = 0x22;

/** A code point as Go's `WriteRune` writes it: an undecodable byte becomes U+FFFD. */
function runeText(code: number): string {
  return code >= 0xd800 && code <= 0xdfff ? "\ufffd" : String.fromCodePoint(code);
}

/**
 * Splits ENV, LABEL and ARG arguments into words as BuildKit does: on blanks outside quotes, keeping
 * the quotes and the escape tokens in the words (the shell-word expansion removes them later). An
 * escape token at the very end is dropped.
 */
export function parseWords(rest: string, escapeToken: EscapeToken): Word[] {
  const escapeCode = escapeToken.charCodeAt(0);
  const words: Word[] = [];
  let inWord = false;
  let inQuote = false;
  let quote = 0;
  let blankOK = false;
  let word = "";
  let start = 0;
  let code = 0;
  let width = 0;
  const read = (pos: number) => {
    code = rest.codePointAt(pos)!;
    width = code > 0xffff ? 2 : 1;
  };
  for (let pos = 0; pos <= rest.length; pos += width) {
    const atEnd = pos === rest.length;
    if (!atEnd) read(pos);
    if (!inWord && !inQuote) {
      if (atEnd) break;
      if (isGoSpace(code)) continue;
      inWord = true;
      start = pos;
    }
    if (atEnd) {
      if (blankOK || word.length > 0) words.push({ text: word, offset: start });
      break;
    }
    if (inWord) {
      if (isGoSpace(code)) {
        inWord = false;
        if (blankOK || word.length > 0) words.push({ text: word, offset: start });
        word = "";
        blankOK = false;
        continue;
      }
      if (code === SINGLE_QUOTE || code === DOUBLE_QUOTE) {
        quote = code;
        blankOK = true;
        inWord = false;
        inQuote = true;
      }
      if (code === escapeCode) {
        if (pos + width === rest.length) continue;
        // Outside quotes an escape token keeps the next character in the word, even a quote or a blank.
        word += runeText(code);
        pos += width;
        read(pos);
      }
      word += runeText(code);
      continue;
    }
    if (code === quote) {
      inQuote = false;
      inWord = true;
    }
    // Inside single quotes the escape token is an ordinary character.
    if (code === escapeCode && quote !== SINGLE_QUOTE) {
      if (pos + width === rest.length) {
        inQuote = false;
        inWord = true;
        continue;
      }
      pos += width;
      word += runeText(code);
      read(pos);
    }
    word += runeText(code);
  }
  return words;
}
