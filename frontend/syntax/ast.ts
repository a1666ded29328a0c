/**
 * The Dockerfile syntax tree: what the parser (tokens → CST → this AST) produces and what the
 * lowering reads. It mirrors BuildKit's parser `Node` so that `tbuild debug parse` prints exactly
 * what BuildKit's dumper prints, and keeps a source range on every node for errors.
 */

/** 1-based line and column in the Dockerfile. */
export interface Position {
  line: number;
  column: number;
}

export interface SourceRange {
  start: Position;
  /** Just after the last character (line endings excluded). */
  end: Position;
}

export interface Heredoc {
  /** The delimiter word, without quotes and without the `-` of `<<-`. */
  name: string;
  /** The body: every line between the instruction and the delimiter, each with its newline (leading tabs removed for `<<-`). */
  content: string;
  /** False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): the body is taken literally. */
  expand: boolean;
  /** `<<-EOF`: leading tabs were stripped from the body and the delimiter line. */
  chomp: boolean;
  /** The file descriptor written before `<<` (`3<<EOF`), 0 when none was. */
  fileDescriptor: number;
  range: SourceRange;
}

export interface InstructionNode {
  /** The keyword as written: `RUN`, `run`, `Copy`. */
  keyword: string;
  /** The keyword lower-cased: `run`. */
  name: string;
  /** `--flag[=value]` words before the arguments, quotes removed as BuildKit removes them. */
  flags: string[];
  /**
   * The arguments as BuildKit's parser splits them (its `Next` chain): one per element in JSON
   * form; the whole command in shell form; `key, value, separator` triples for ENV and LABEL
   * (separator `"="` for `k=v`, `""` for `k v`); the type word then the command for HEALTHCHECK.
   */
  args: string[];
  /** The arguments were a JSON string array (exec form). */
  json: boolean;
  /** The logical line, continuations removed: BuildKit's `Original`. */
  original: string;
  heredocs: Heredoc[];
  /** ONBUILD's inner instruction (its `args` are then empty). */
  inner?: InstructionNode;
  /** The comment lines directly above the instruction, `#` and surrounding blanks removed. */
  comments: string[];
  /** From the keyword to the end of the last continuation line or heredoc delimiter. */
  range: SourceRange;
}

export interface Directive {
  /** Lower-cased: `syntax`, `escape`, `check`. */
  name: string;
  value: string;
  range: SourceRange;
}

export interface ParseWarning {
  message: string;
  range: SourceRange;
}

export interface DockerfileAst {
  /** The name errors use, e.g. `Dockerfile` or `build/Dockerfile.dev`. */
  file: string;
  /** The source lines (without newlines), for error excerpts. */
  lines: string[];
  directives: Directive[];
  /** From the `escape` directive: `\` by default, or a backtick. */
  escapeToken: "\\" | "`";
  instructions: InstructionNode[];
  warnings: ParseWarning[];
}
