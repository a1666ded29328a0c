/**
 * Shell-word expansion for Dockerfile instructions, with BuildKit's semantics: `$v`, `${v}` and the
 * modifiers `:-` `-` `:+` `+` `:?` `?` `#` `##` `%` `%%` `/` `//`, quotes, the escape token, and
 * splitting into words. `ShellLex` is the whole surface; errors are `ShellExpansionError`s.
 */
export { ShellExpansionError } from "./errors.js";
export type { EnvLookup, ExpandResult, ShellLexOptions } from "./lex.js";
export { ShellLex } from "./lex.js";
