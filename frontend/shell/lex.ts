import { Cursor } from "./cursor.js";
import { ShellExpansionError } from "./errors.js";
import { InvalidPatternError, removePrefix, removeSuffix, replaceAll, replaceFirst } from "./pattern.js";

/**
 * Shell-word expansion as BuildKit's Dockerfile frontend does it (`frontend/dockerfile/shell`):
 * quotes, the escape token, `$v` and `${v...}` with their modifiers, and splitting into words.
 * It is not a shell: there is no command substitution, arithmetic, globbing of files or `~`.
 */

/**
 * How deep `${...}` may nest in the word of another `${...}`. BuildKit's lexer recurses without a
 * limit (a Go stack grows to a gigabyte); this one recurses too, a few frames per level, so a word
 * nested thousands deep would exhaust Node's stack. Real Dockerfiles nest two or three deep.
 */
export const MAX_EXPANSION_DEPTH = 100;

/** The variables in scope, by exact (case-sensitive) name, as on Linux. */
export type EnvLookup = ReadonlyMap<string, string>;

export interface ExpandResult {
  /** The expanded word; whitespace inside it is kept. */
  result: string;
  /**
   * The expanded word split on whitespace, the way COPY and EXPOSE see their arguments:
   * whitespace that was quoted or escaped stays inside a word, whitespace that came out of a
   * variable separates words, and empty words are dropped.
   */
  words: string[];
  /** Names that were looked up and set. */
  matched: Set<string>;
  /** Names that were looked up and not set. */
  unmatched: Set<string>;
}

export interface ShellLexOptions {
  /** The character of the Dockerfile's `# escape=` directive; a backslash by default. */
  escapeToken?: "\\" | "`";
  /** Keep quote characters in the result (the quoting still takes effect). */
  rawQuotes?: boolean;
  /** Keep escape characters in the result (the escaping still takes effect). */
  rawEscapes?: boolean;
  /** Leave references to unset variables as written, so that a later stage can expand them. */
  skipUnsetEnv?: boolean;
  /**
   * Treat quotes as ordinary characters. BuildKit expands the body of a COPY/ADD heredoc this way,
   * because its quotes belong to the file's content, not to the Dockerfile.
   */
  skipProcessQuotes?: boolean;
}

export class ShellLex {
  private readonly options: Required<ShellLexOptions>;

  constructor(options: ShellLexOptions = {}) {
    this.options = {
      escapeToken: options.escapeToken ?? "\\",
      rawQuotes: options.rawQuotes ?? false,
      rawEscapes: options.rawEscapes ?? false,
      skipUnsetEnv: options.skipUnsetEnv ?? false,
      skipProcessQuotes: options.skipProcessQuotes ?? false,
    };
  }

  /** One word: quotes removed, variables substituted, no splitting (BuildKit ProcessWord). */
  processWord(word: string, env: EnvLookup): string {
    return this.expand(word, env).result;
  }

  /** Same, with which variables were used set / unset (BuildKit ProcessWordWithMatches). */
  processWordWithMatches(word: string, env: EnvLookup): ExpandResult {
    return this.expand(word, env);
  }

  /** Expands and splits on unquoted whitespace (BuildKit ProcessWords), for COPY/EXPOSE-style word lists. */
  processWords(word: string, env: EnvLookup): string[] {
    return this.expand(word, env).words;
  }

  private expand(word: string, env: EnvLookup): ExpandResult {
    return literalWordShortcut(word) ?? this.expandInFull(word, env);
  }

  /**
   * `processWordWithMatches` read a character at a time, without the shortcut for a literal word:
   * what a property test holds the shortcut to.
   */
  expandInFull(word: string, env: EnvLookup): ExpandResult {
    const expansion = new Expansion(word, env, this.options);
    const { text, words } = expansion.readUntil(undefined, this.options.rawEscapes);
    return { result: text, words, matched: expansion.matched, unmatched: expansion.unmatched };
  }
}

/** What makes a word more than its own text: a variable, a quote, an escape, a heredoc marker. */
const SPECIAL = /[$'"\\`<]/;
const SPACES = /\p{White_Space}+/u;

/**
 * An optimization: a word without SPECIAL characters (most words of a Dockerfile: names, paths,
 * values) is itself, split on whitespace, and reading it a character at a time made most of the
 * time of lowering a Dockerfile of 100,000 ENV lines. A byte order mark at the start, which the
 * full reading drops, is left to it. Undefined for any other word.
 */
function literalWordShortcut(word: string): ExpandResult | undefined {
  if (SPECIAL.test(word) || word.startsWith("\uFEFF")) return undefined;
  return {
    result: word,
    words: word.split(SPACES).filter((w) => w !== ""),
    matched: new Set(),
    unmatched: new Set(),
  };
}

const MISSING_BRACE = `missing '}' to close "\${"`;
const MODIFIERS = ":- - :+ + :? ? # ## % %% / //";

/** The shell's special parameters (`$@`, `$#`, ...): never set in a Dockerfile, but valid names. */
const SPECIAL_PARAMETERS = new Set(["@", "*", "#", "?", "-", "$", "!", "0"]);

// Each character of a word is classified: an ASCII one (nearly all of them) without a regular
// expression, which costs a tenth of the lowering of a Dockerfile of 100,000 ENV lines otherwise.
const isAscii = (ch: string): boolean => ch.charCodeAt(0) < 0x80;
const isAsciiDigit = (ch: string): boolean => ch >= "0" && ch <= "9";
const isDigit = (ch: string): boolean => (isAscii(ch) ? isAsciiDigit(ch) : /\p{Nd}/u.test(ch));
const isNameChar = (ch: string): boolean =>
  isAscii(ch)
    ? isAsciiDigit(ch) || (ch >= "a" && ch <= "z") || (ch >= "A" && ch <= "Z") || ch === "_"
    : /[\p{L}\p{Nd}_]/u.test(ch);
/** Go's unicode.IsSpace, which BuildKit splits words on: in ASCII, tab to carriage return, and space. */
const isSpace = (ch: string): boolean =>
  isAscii(ch) ? ch === " " || (ch >= "\t" && ch <= "\r") : /\p{White_Space}/u.test(ch);
/** What may separate `<<` from its delimiter word. */
const isHeredocBlank = (ch: string | undefined): boolean => ch === " " || ch === "\t" || ch === "\r";

/** The state of expanding one word: the cursor, the variables seen, the current escape mode. */
class Expansion {
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly source: string;
  private readonly env: EnvLookup;
  private readonly options: Required<ShellLexOptions>;
  private readonly cursor: Cursor;
  /** Whether escapes are kept; `${v#p}` and `${v/p/r}` keep them in their patterns. */
  private rawEscapes: boolean;
  /** How many `${` are open around the cursor. */
  private depth = 0;

  constructor(source: string, env: EnvLookup, options: Required<ShellLexOptions>) {
    this.source = source;
    this.env = env;
    this.options = options;
    this.cursor = new Cursor(source);
    this.rawEscapes = options.rawEscapes;
  }

  /**
   * Expands up to `stop` (consumed) or, when `stop` is undefined, to the end of the word. The
   * words are only used at the top level; inside `${...}` they are computed and dropped.
   */
  readUntil(stop: "}" | "/" | undefined, rawEscapes: boolean): { text: string; words: string[] } {
    const outerRawEscapes = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let text = "";
      const words = new WordList();
      for (let ch = this.cursor.peek(); ch !== undefined; ch = this.cursor.peek()) {
        if (ch === stop) {
          this.cursor.next();
          return { text, words: words.finish() };
        }
        if (ch === "$") {
          const value = this.dollar();
          text += value;
          words.addSplittableText(value);
        } else if (ch === "<") {
          const marker = this.heredocMarker();
          text += marker;
          words.addKept(marker);
        } else if ((ch === "'" || ch === '"') && !this.options.skipProcessQuotes) {
          const quoted = ch === "'" ? this.singleQuoted() : this.doubleQuoted();
          text += quoted;
          words.addKept(quoted);
        } else {
          this.cursor.next();
          if (ch !== this.options.escapeToken) {
            text += ch;
            words.addSplittable(ch);
            continue;
          }
          if (this.rawEscapes) {
            text += ch;
            words.addKept(ch);
          }
          const escaped = this.cursor.next();
          if (escaped === undefined) break; // an escape at the very end escapes nothing
          text += escaped;
          words.addKept(escaped);
        }
      }
      if (stop !== undefined) throw this.error(`missing '${stop}'`);
      return { text, words: words.finish() };
    } finally {
      this.rawEscapes = outerRawEscapes;
    }
  }

  /** Everything up to the next `'` is literal; a single quote cannot be escaped inside. */
  private singleQuoted(): string {
    this.cursor.next();
    let text = "";
    for (let ch = this.cursor.next(); ch !== "'"; ch = this.cursor.next()) {
      if (ch === undefined) throw this.error("unterminated single quote: missing closing '");
      text += ch;
    }
    return this.options.rawQuotes ? `'${text}'` : text;
  }

  /** Variables are expanded; the escape token escapes only `"`, `$` and itself. */
  private doubleQuoted(): string {
    this.cursor.next();
    let text = "";
    for (let ch = this.cursor.peek(); ch !== '"'; ch = this.cursor.peek()) {
      if (ch === undefined) throw this.error('unterminated double quote: missing closing "');
      if (ch === "$") {
        text += this.dollar();
        continue;
      }
      this.cursor.next();
      if (ch === this.options.escapeToken) {
        if (this.rawEscapes) text += ch;
        const next = this.cursor.peek();
        if (next === '"' || next === "$" || next === this.options.escapeToken) {
          text += next;
          this.cursor.next();
          continue;
        }
        // Before any other character the escape is literal. With rawEscapes BuildKit has already
        // kept it above and writes it a second time here; that is kept for fidelity.
      }
      text += ch;
    }
    this.cursor.next();
    return this.options.rawQuotes ? `"${text}"` : text;
  }

  /**
   * `<<` keeps the blanks after it, so that `RUN cat <<  EOF` still yields one word naming the
   * heredoc delimiter. A lone `<` is an ordinary character.
   */
  private heredocMarker(): string {
    this.cursor.next();
    if (this.cursor.peek() !== "<") return "<";
    this.cursor.next();
    let marker = "<<";
    for (let ch = this.cursor.peek(); isHeredocBlank(ch); ch = this.cursor.peek()) {
      marker += ch;
      this.cursor.next();
    }
    return marker;
  }

  /** `$name`, `$1`, `$@`, or `${...}`; a `$` that starts none of them is literal. */
  private dollar(): string {
    const start = this.cursor.offset;
    this.cursor.next();
    if (this.cursor.peek() === "{") {
      if (this.depth >= MAX_EXPANSION_DEPTH) {
        throw this.error(
          `variable expansion nested deeper than ${MAX_EXPANSION_DEPTH} levels (\${...} inside \${...}): split it over several ARG or ENV instructions`,
          start,
        );
      }
      this.cursor.next();
      this.depth++;
      try {
        return this.braced();
      } finally {
        this.depth--;
      }
    }
    const name = this.variableName();
    if (name === "") return "$";
    const value = this.lookup(name);
    if (value !== undefined) return value;
    return this.options.skipUnsetEnv ? `$${name}` : "";
  }

  /** After `${`: the name, then `}` or a modifier. */
  private braced(): string {
    const first = this.cursor.peek();
    if (first === undefined) throw this.error(MISSING_BRACE);
    if (first === "{" || first === "}" || first === ":") {
      throw this.error(`bad substitution: expected a variable name after "\${", found "${first}"`);
    }
    const name = this.variableName();
    const modifier = this.cursor.next();
    switch (modifier) {
      case undefined:
        throw this.error(MISSING_BRACE);
      case "}":
        return this.plain(name);
      case "-":
      case "+":
      case "?":
        return this.conditional(name, modifier, false);
      case "#":
      case "%":
        return this.trim(name, modifier);
      case "/":
        return this.replace(name);
      case ":":
        return this.afterColon(name);
      default:
        throw this.unsupported(name, modifier);
    }
  }

  /** `${v}` */
  private plain(name: string): string {
    const value = this.lookup(name);
    if (value !== undefined) return value;
    return this.options.skipUnsetEnv ? `\${${name}}` : "";
  }

  /** `${v:-w}`, `${v:+w}`, `${v:?w}`; anything else after the colon is refused. */
  private afterColon(name: string): string {
    const modifier = this.cursor.next();
    if (modifier === "-" || modifier === "+" || modifier === "?")
      return this.conditional(name, modifier, true);
    if (modifier === "#" || modifier === "%") throw this.unsupported(name, `:${modifier}`);
    // BuildKit reads the word of an unknown `${v:X...}` before it refuses X, and under skipUnsetEnv
    // an unset v comes back as written instead of failing.
    const word = this.readWordUntil("}", false);
    const value = this.lookup(name);
    if (value === undefined && this.options.skipUnsetEnv) return `\${${name}:${modifier}${word}}`;
    throw this.unsupported(name, `:${modifier}`);
  }

  /**
   * `${v-w}` the value, or w when v is unset; `${v+w}` w when v is set, else empty;
   * `${v?w}` the value, or fail with w. With the colon, an empty value counts as unset.
   */
  private conditional(name: string, modifier: "-" | "+" | "?", colon: boolean): string {
    const word = this.readWordUntil("}", false);
    const value = this.lookup(name);
    if (value === undefined && this.options.skipUnsetEnv) {
      return `\${${name}${colon ? ":" : ""}${modifier}${word}}`;
    }
    const isSet = value !== undefined && !(colon && value === "");
    switch (modifier) {
      case "-":
        return isSet ? value : word;
      case "+":
        return isSet ? word : "";
      case "?": {
        if (isSet) return value;
        const reason = value === undefined ? "is not allowed to be unset" : "is not allowed to be empty";
        throw this.error(`${name}: ${word !== "" ? word : reason}`);
      }
    }
  }

  /** `${v#p}` / `${v##p}` remove the shortest / longest matching prefix; `%` the suffix. */
  private trim(name: string, modifier: "#" | "%"): string {
    const word = this.readWordUntil("}", true);
    const value = this.lookup(name);
    if (value === undefined && this.options.skipUnsetEnv) return `\${${name}${modifier}${word}}`;
    // The doubled modifier is recognised after expansion, as BuildKit does: `${v#$p}` with p="#x"
    // removes the longest match of "x".
    const longest = word.startsWith(modifier);
    const pattern = longest ? word.slice(1) : word;
    const remove = modifier === "#" ? removePrefix : removeSuffix;
    return this.withPattern(pattern, () => remove(value ?? "", pattern, longest));
  }

  /** `${v/p/r}` replaces the first match of p, `${v//p/r}` every match. */
  private replace(name: string): string {
    const everyMatch = this.cursor.peek() === "/";
    if (everyMatch) this.cursor.next();
    const pattern = this.readWordUntil("/", true);
    const replacement = this.readWordUntil("}", true);
    const value = this.lookup(name);
    if (value === undefined && this.options.skipUnsetEnv) {
      // BuildKit writes a single slash back here, which would turn `//` into `/`; the reference is
      // kept as it was written instead.
      return `\${${name}${everyMatch ? "//" : "/"}${pattern}/${replacement}}`;
    }
    const substitute = everyMatch ? replaceAll : replaceFirst;
    return this.withPattern(pattern, () => substitute(value ?? "", pattern, replacement));
  }

  private withPattern(pattern: string, match: () => string): string {
    try {
      return match();
    } catch (err) {
      if (err instanceof InvalidPatternError) {
        throw this.error(`invalid pattern "${pattern}" in substitution: ${err.message}`);
      }
      throw err;
    }
  }

  /**
   * The word of a modifier, up to its unescaped, unquoted `stop`. Whatever goes wrong inside it
   * once the input has run out is reported as the missing delimiter, which is what the user
   * needs to add.
   */
  private readWordUntil(stop: "}" | "/", rawEscapes: boolean): string {
    try {
      return this.readUntil(stop, rawEscapes).text;
    } catch (err) {
      if (err instanceof ShellExpansionError && this.cursor.atEnd) {
        throw this.error(stop === "}" ? MISSING_BRACE : `missing '/' after the pattern of "\${.../"`);
      }
      throw err;
    }
  }

  /** A name, a run of digits (positional parameters), or one special parameter character. */
  private variableName(): string {
    const first = this.cursor.peek();
    if (first === undefined) return "";
    if (isDigit(first)) return this.readWhile(isDigit);
    if (SPECIAL_PARAMETERS.has(first)) {
      this.cursor.next();
      return first;
    }
    return this.readWhile(isNameChar);
  }

  private readWhile(accept: (ch: string) => boolean): string {
    let text = "";
    for (let ch = this.cursor.peek(); ch !== undefined && accept(ch); ch = this.cursor.peek()) {
      text += ch;
      this.cursor.next();
    }
    return text;
  }

  private lookup(name: string): string | undefined {
    const value = this.env.get(name);
    (value === undefined ? this.unmatched : this.matched).add(name);
    return value;
  }

  private unsupported(name: string, modifier: string): ShellExpansionError {
    if (name === "") {
      return this.error(`bad substitution: expected a variable name after "\${", found "${modifier}"`);
    }
    return this.error(
      `bad substitution: unsupported modifier "${modifier}" in "\${${name}${modifier}..." (supported: ${MODIFIERS})`,
    );
  }

  /** `offset`: where in the word the problem is, in code points, when it is one place. */
  private error(message: string, offset?: number): ShellExpansionError {
    return new ShellExpansionError(message, this.source, offset);
  }
}

/**
 * The words of ProcessWords. A character that may split (unquoted, or from a variable) ends the
 * current word when it is whitespace; kept text (quoted or escaped) never does. An empty word,
 * such as `""` alone, is never produced.
 */
class WordList {
  private readonly words: string[] = [];
  private current = "";

  addSplittable(ch: string): void {
    if (!isSpace(ch)) {
      this.current += ch;
    } else if (this.current !== "") {
      this.words.push(this.current);
      this.current = "";
    }
  }

  addSplittableText(text: string): void {
    for (const ch of text) this.addSplittable(ch);
  }

  addKept(text: string): void {
    this.current += text;
  }

  finish(): string[] {
    if (this.current !== "") this.words.push(this.current);
    this.current = "";
    return this.words;
  }
}
