// biome-ignore-all lint/suspicious/noTemplateCurlyInString: shell words are written with ${...} on purpose
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TbuildError } from "../../../errors/index.js";
import { ShellExpansionError, ShellLex, type ShellLexOptions } from "../../../frontend/shell/index.js";
import { MAX_EXPANSION_DEPTH } from "../../../frontend/shell/lex.js";

const env = (vars: Record<string, string> = {}) => new Map(Object.entries(vars));
const word = (text: string, vars: Record<string, string> = {}, options?: ShellLexOptions) =>
  new ShellLex(options).processWord(text, env(vars));
const words = (text: string, vars: Record<string, string> = {}, options?: ShellLexOptions) =>
  new ShellLex(options).processWords(text, env(vars));

function failure(
  text: string,
  vars: Record<string, string> = {},
  options?: ShellLexOptions,
): ShellExpansionError {
  try {
    word(text, vars, options);
  } catch (err) {
    if (err instanceof ShellExpansionError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(text)} to fail`);
}

describe("variables", () => {
  it("substitutes $name and ${name}, and an unset variable is empty", () => {
    expect(word("$A-${A}_$B.", { A: "x" })).toBe("x-x_.");
  });

  it("reads the longest name, so braces are needed to glue text on", () => {
    expect(word("$Abc ${A}bc", { A: "x", Abc: "y" })).toBe("y xbc");
  });

  it("names are case-sensitive, as on Linux", () => {
    expect(word("$home", { HOME: "/root" })).toBe("");
  });

  it("keeps a $ that starts no name", () => {
    expect(word("cost: $ 5$")).toBe("cost: $ 5$");
    expect(word("$.x $/")).toBe("$.x $/");
  });

  it("reads positional and special parameters, which a Dockerfile never sets", () => {
    expect(word("$1x ${12}y $@z $$w", { "1": "one" })).toBe("onex y z w");
  });

  it("expands inside the word of a modifier, to any depth", () => {
    expect(word("${A:-${B:-$C}}", { C: "deep" })).toBe("deep");
  });

  it("builds release file names as BuildKit's own test does", () => {
    const name = "app-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    const common = { VERSION: "v1.2.3", TARGETOS: "linux" };
    expect(word(name, { ...common, TARGETARCH: "arm", TARGETVARIANT: "v7" })).toBe(
      "app-v1.2.3.linux-arm-v7.tar.gz",
    );
    expect(word(name, { ...common, TARGETARCH: "arm64", TARGETVARIANT: "" })).toBe(
      "app-v1.2.3.linux-arm64.tar.gz",
    );
    expect(word(name, { ...common, TARGETARCH: "arm64" })).toBe("app-v1.2.3.linux-arm64.tar.gz");
  });
});

describe("defaults, alternatives and required values", () => {
  const vars = { SET: "value", EMPTY: "" };

  it("${v-w} replaces only an unset variable, ${v:-w} an empty one too", () => {
    expect(word("${SET-w} [${EMPTY-w}] ${UNSET-w}", vars)).toBe("value [] w");
    expect(word("${SET:-w} ${EMPTY:-w} ${UNSET:-w}", vars)).toBe("value w w");
  });

  it("${v+w} gives w for a set variable, ${v:+w} only for a non-empty one", () => {
    expect(word("[${SET+w}] [${EMPTY+w}] [${UNSET+w}]", vars)).toBe("[w] [w] []");
    expect(word("[${SET:+w}] [${EMPTY:+w}] [${UNSET:+w}]", vars)).toBe("[w] [] []");
  });

  it("${v?msg} fails for an unset variable, ${v:?msg} for an empty one too", () => {
    expect(word("[${SET?no}] [${EMPTY?no}]", vars)).toBe("[value] []");
    expect(failure("${UNSET?must be set}", vars).message).toBe("UNSET: must be set");
    expect(failure("${EMPTY:?must not be empty}", vars).message).toBe("EMPTY: must not be empty");
  });

  it("says why when ${v?} has no message", () => {
    expect(failure("${UNSET?}").message).toBe("UNSET: is not allowed to be unset");
    expect(failure("${EMPTY:?}", { EMPTY: "" }).message).toBe("EMPTY: is not allowed to be empty");
  });

  it("expands variables in the message", () => {
    expect(failure("${VAR:?message here$ARG}", { ARG: "x" }).message).toBe("VAR: message herex");
  });
});

describe("patterns: ${v#p} ${v##p} ${v%p} ${v%%p}", () => {
  const path = { P: "/usr/local/lib/file.tar.gz" };

  it("removes the shortest or the longest matching prefix", () => {
    expect(word("${P#*/}", path)).toBe("usr/local/lib/file.tar.gz");
    expect(word("${P##*/}", path)).toBe("file.tar.gz");
  });

  it("removes the shortest or the longest matching suffix", () => {
    expect(word("${P%.*}", path)).toBe("/usr/local/lib/file.tar");
    expect(word("${P%%.*}", path)).toBe("/usr/local/lib/file");
  });

  it("leaves the value alone when nothing matches, or the pattern is empty", () => {
    expect(word("${P#nomatch} ${P%} ${P##}", { P: "abc" })).toBe("abc abc abc");
  });

  it("? matches one character, including one outside the BMP", () => {
    expect(word("${V#?}", { V: "😀x" })).toBe("x");
  });

  it("treats [ and ] literally: there are no bracket expressions", () => {
    expect(word("${V#[ab]}", { V: "[ab]c" })).toBe("c");
    expect(word("${V#[ab]}", { V: "ac" })).toBe("ac");
  });

  it("\\* \\? and \\\\ match themselves", () => {
    expect(word("${V%%\\**}", { V: "xx**" })).toBe("xx");
    expect(word("${V#?\\?}", { V: "???y" })).toBe("?y");
    expect(word("${V#a\\\\}", { V: "a\\b" })).toBe("b");
  });

  it("\\} puts a closing brace in the pattern", () => {
    expect(word("${V#{\\}}", { V: "{}x" })).toBe("x");
  });

  it("takes the pattern from a variable", () => {
    expect(word("${V#$N} ${V%%$M}", { V: "xxyy", N: "x", M: "" })).toBe("xyy xxyy");
  });

  it("* stops at a newline, as Go's regexp . does", () => {
    expect(word("${V##*b}", { V: "ab\nab" })).toBe("\nab");
  });

  it("rejects an escape that is not \\*, \\? or \\\\", () => {
    expect(failure("${V#$N}", { V: "x", N: "a\\x" }).message).toBe(
      'invalid pattern "a\\x" in substitution: "\\x" is not an escape (only \\*, \\? and \\\\ are)',
    );
  });

  it("refuses ${v:#p} and ${v:%p}", () => {
    expect(() => word("${V:#x}", { V: "x" })).toThrow(/unsupported modifier ":#"/);
  });
});

describe("replacement: ${v/p/r} ${v//p/r}", () => {
  it("replaces the first match, or every match", () => {
    const vars = { F: "/a/foo/b/c.txt", N: "/?/", R: "/" };
    expect(word("${F/$N/$R} - ${F//$N/$R}", vars)).toBe("/foo/b/c.txt - /foo/c.txt");
  });

  it("puts / in a pattern with \\/", () => {
    expect(word("${F//\\//\\/}", { F: "/tmp/foo.txt" })).toBe("\\/tmp\\/foo.txt");
  });

  it("an empty pattern matches at the start", () => {
    expect(word("${F/$B/ww}", { F: "xxyy", B: "" })).toBe("wwxxyy");
  });

  it("a pattern matching everything is replaced once, as Go's ReplaceAllString does", () => {
    expect(word("${F//*/r}", { F: "abc" })).toBe("r");
  });

  it("an escaped $0 in a replace-all brings back the matched text, as in a Go regexp template", () => {
    expect(word("${F//o/<\\$0>} ${F/o/<\\$0>}", { F: "foo" })).toBe("f<\\o><\\o> f<\\$0>o");
  });

  it("fails without the second /", () => {
    expect(failure("${F//x}", { F: "x" }).message).toBe(`missing '/' after the pattern of "\${.../"`);
  });
});

describe("quotes and escapes", () => {
  it("single quotes keep everything literal", () => {
    expect(word("'$A \\$A \"'", { A: "x" })).toBe('$A \\$A "');
  });

  it('double quotes expand variables and let \\ escape only ", $ and \\', () => {
    expect(word('"$A \\$A \\" \\\\ \\n"', { A: "x" })).toBe('x $A " \\ \\n');
  });

  it("outside quotes the escape takes the next character literally, and vanishes at the end", () => {
    expect(word("a\\ b\\$A\\")).toBe("a b$A");
  });
});

describe("backtick escape token (# escape=`)", () => {
  const backtick: ShellLexOptions = { escapeToken: "`" };

  it("escapes with ` and leaves backslashes alone", () => {
    expect(word("C:\\Users\\`$HOME", { HOME: "/root" }, backtick)).toBe("C:\\Users\\$HOME");
  });

  it('escapes ", $ and ` inside double quotes', () => {
    expect(word('"`" `$A ``"', { A: "x" }, backtick)).toBe('" $A `');
  });

  it("pattern escapes stay backslashes whatever the escape token", () => {
    expect(word("${V#\\*}", { V: "*x" }, backtick)).toBe("x");
  });
});

describe("rawQuotes and rawEscapes", () => {
  it("rawQuotes keeps the quotes while still honouring them", () => {
    expect(word(`'$A' "$A b"`, { A: "x" }, { rawQuotes: true })).toBe(`'$A' "x b"`);
    expect(words(`a "b c"`, {}, { rawQuotes: true })).toEqual(["a", '"b c"']);
  });

  it("rawEscapes keeps escape characters while still honouring them", () => {
    expect(word("a\\ b \\$A", { A: "x" }, { rawEscapes: true })).toBe("a\\ b \\$A");
  });

  it("rawEscapes doubles an escape before an ordinary character in double quotes, as BuildKit does", () => {
    expect(word('"a\\nb"', {}, { rawEscapes: true })).toBe("a\\\\nb");
    expect(word('"a\\$b"', {}, { rawEscapes: true })).toBe("a\\$b");
  });

  it("the words of a modifier drop their escapes even with rawEscapes", () => {
    expect(word("${U:-\\$x}", {}, { rawEscapes: true })).toBe("$x");
  });
});

describe("skipUnsetEnv", () => {
  const skip: ShellLexOptions = { skipUnsetEnv: true };

  it("leaves references to unset variables as written, and expands set ones", () => {
    expect(word("$U ${U} ${U:-d} ${U##p} ${U%p} $S", { S: "set" }, skip)).toBe(
      "$U ${U} ${U:-d} ${U##p} ${U%p} set",
    );
  });

  it("keeps both slashes of an unset ${v//p/r}", () => {
    expect(word("${U//a/b} ${U/a/b}", {}, skip)).toBe("${U//a/b} ${U/a/b}");
  });

  it("still applies modifiers to set variables, empty ones included", () => {
    expect(word("${E:-d}${S:+alt}", { E: "", S: "x" }, skip)).toBe("dalt");
  });
});

describe("skipProcessQuotes", () => {
  it("treats quotes as text, as BuildKit does for COPY heredoc bodies", () => {
    expect(word(`echo "$A" '$A'`, { A: "x" }, { skipProcessQuotes: true })).toBe(`echo "x" 'x'`);
  });
});

describe("processWords", () => {
  it("splits on unquoted whitespace and on whitespace that a variable brings", () => {
    expect(words('a  $V "q u" b\\ c', { V: " x  y " })).toEqual(["a", "x", "y", "q u", "b c"]);
  });

  it("never yields an empty word", () => {
    expect(words(`"" '' $U`)).toEqual([]);
  });

  it("keeps the text before a nested expansion in its word", () => {
    expect(words("hello${X:-a}b c")).toEqual(["helloab", "c"]);
  });

  it("keeps << and the blanks after it with the heredoc delimiter", () => {
    expect(words("cat <<  EOF > f")).toEqual(["cat", "<<  EOF", ">", "f"]);
    expect(words("a < b")).toEqual(["a", "<", "b"]);
  });
});

describe("matched and unmatched variables", () => {
  const lex = new ShellLex();
  const report = (text: string, vars: Record<string, string>) => {
    const { result, matched, unmatched } = lex.processWordWithMatches(text, env(vars));
    return { result, matched: [...matched].sort(), unmatched: [...unmatched].sort() };
  };

  it("reports every name looked up, set (even empty) or not", () => {
    expect(report("${FOO:-a} ${BAR:-b} ${BAZ:-c}", { FOO: "x", BAR: "" })).toEqual({
      result: "x b c",
      matched: ["BAR", "FOO"],
      unmatched: ["BAZ"],
    });
  });

  it("counts names used inside patterns and replacements", () => {
    expect(report("${F/$N/$R}", { F: "http://x", N: "http://", R: "https://" })).toEqual({
      result: "https://x",
      matched: ["F", "N", "R"],
      unmatched: [],
    });
  });

  it("reports nothing for a word without variables", () => {
    expect(report("x", { DUMMY: "d" })).toEqual({ result: "x", matched: [], unmatched: [] });
  });

  it("gives the words as well", () => {
    expect(lex.processWordWithMatches("a $V", env({ V: "b c" })).words).toEqual(["a", "b", "c"]);
  });
});

describe("errors a user can read", () => {
  it("is a TbuildError with code E_SHELL_EXPANSION that keeps the word", () => {
    const err = failure("x ${");
    expect(err).toBeInstanceOf(TbuildError);
    expect(err.code).toBe("E_SHELL_EXPANSION");
    expect(err.word).toBe("x ${");
  });

  it.each([
    ["'abc", "unterminated single quote: missing closing '"],
    ['"abc', 'unterminated double quote: missing closing "'],
    ["${abc", `missing '}' to close "\${"`],
    ["${abc:-x", `missing '}' to close "\${"`],
    ["${}", 'bad substitution: expected a variable name after "${", found "}"'],
    ["${:-x}", 'bad substitution: expected a variable name after "${", found ":"'],
    ["${.}", 'bad substitution: expected a variable name after "${", found "."'],
    [
      "${PWD:=x}",
      'bad substitution: unsupported modifier ":=" in "${PWD:=..." (supported: :- - :+ + :? ? # ## % %% / //)',
    ],
    ["${x:?must be set}", "x: must be set"],
  ])("%s → %s", (text, message) => {
    expect(failure(text).message).toBe(message);
  });
});

describe("nesting", () => {
  const nested = (depth: number, open = "${A:-", close = "}") =>
    `${open.repeat(depth)}x${close.repeat(depth)}`;

  it(`expands \${...} nested ${MAX_EXPANSION_DEPTH} deep`, () => {
    expect(word(nested(MAX_EXPANSION_DEPTH))).toBe("x");
    expect(word(nested(MAX_EXPANSION_DEPTH, '"${A:-', '}"'))).toBe("x");
  });

  it.each([
    ["${A:-", "}"],
    ['"${A:-', '}"'],
    ["${A/", "/}"],
  ])(
    "refuses %s nested one level deeper, naming the limit and where the deepest ${ starts",
    (open, close) => {
      const err = failure(nested(MAX_EXPANSION_DEPTH + 1, open, close));
      expect(err.message).toMatch(`variable expansion nested deeper than ${MAX_EXPANSION_DEPTH} levels`);
      expect(err.offset).toBe(open.length * MAX_EXPANSION_DEPTH + open.indexOf("$"));
    },
  );

  it("refuses a word nested thousands deep with the same error, not a stack overflow", () => {
    const err = failure(nested(20_000));
    expect(err.message).toMatch("nested deeper than");
    expect(err.offset).toBe(5 * MAX_EXPANSION_DEPTH);
  });

  it("counts depth, not how many ${...} a word holds", () => {
    expect(word("${A:-x}".repeat(5_000))).toBe("x".repeat(5_000));
  });
});

describe("the literal-word shortcut", () => {
  const literal = [
    "a",
    "Z",
    "_",
    "1",
    ".",
    "/",
    "=",
    "-",
    ":",
    " ",
    "\t",
    "\n",
    "\u00a0",
    "\u2003",
    "é",
    "😀",
    "\ud800",
  ];
  const special = ["$", "{", "}", "'", '"', "\\", "`", "<", "\uFEFF", "#", "%"];
  const wordOf = (chars: string[]) =>
    fc.array(fc.constantFrom(...chars), { maxLength: 12 }).map((a) => a.join(""));

  it("gives what reading the word a character at a time gives, for any word and options", () => {
    const outcome = (read: () => unknown) => {
      try {
        return read();
      } catch (err) {
        return `error: ${(err as Error).message}`;
      }
    };
    fc.assert(
      fc.property(
        fc.oneof(wordOf(literal), wordOf([...literal, ...special])),
        fc.record({
          escapeToken: fc.constantFrom("\\" as const, "`" as const),
          rawQuotes: fc.boolean(),
          rawEscapes: fc.boolean(),
          skipUnsetEnv: fc.boolean(),
          skipProcessQuotes: fc.boolean(),
        }),
        (text, options) => {
          const lex = new ShellLex(options);
          const vars = env({ A: "x y" });
          expect(outcome(() => lex.processWordWithMatches(text, vars))).toEqual(
            outcome(() => lex.expandInFull(text, vars)),
          );
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
