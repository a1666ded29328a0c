import { TbuildError } from "../../errors/index.js";

/**
 * A word that cannot be expanded: an unterminated quote or `${`, a bad substitution, a failed
 * `${v?message}`. The message is the reason alone ("x: must be set"); the caller that knows the
 * Dockerfile position adds it, and `word` keeps the text that failed.
 */
export class ShellExpansionError extends TbuildError {
  /** The whole word being expanded, as written. */
  readonly word: string;

  constructor(message: string, word: string) {
    super("E_SHELL_EXPANSION", message);
    this.word = word;
  }
}
