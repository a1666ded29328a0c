import { TbuildError } from "../../errors/index.js";

/**
 * A word that cannot be expanded: an unterminated quote or `${`, a bad substitution, a failed
 * `${v?message}`. The message is the reason alone ("x: must be set"); the caller that knows the
 * Dockerfile position adds it, and `word` keeps the text that failed.
 */
export class ShellExpansionError extends TbuildError {
  /** The whole word being expanded, as written. */
  readonly word: string;
  /** Where in `word` the problem is (code points from its start), when it is one place. */
  readonly offset: number | undefined;

  constructor(message: string, word: string, offset?: number) {
    super("E_SHELL_EXPANSION", message);
    this.word = word;
    this.offset = offset;
  }
}
