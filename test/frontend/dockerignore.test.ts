import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DockerignoreError, parseDockerignore, readDockerignore } from "../../frontend/dockerignore.js";
import { type ContextMatcher, createContextMatcher } from "../../worker/ops/pattern-matcher.js";

let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "tbuild-dockerignore-"));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Creates files (and, for names ending in `/`, empty directories) under `dir`. */
async function makeTree(dir: string, entries: Record<string, string>): Promise<void> {
  for (const [name, content] of Object.entries(entries)) {
    const path = join(dir, name);
    if (name.endsWith("/")) await mkdir(path, { recursive: true });
    else {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, content);
    }
  }
}

/**
 * What a build would receive of the context: walks it as BuildKit does (skipping the directories the
 * matcher says may be skipped) and lists kept files, plus directories that are kept themselves or
 * hold something kept (with a trailing `/`).
 */
async function keptPaths(contextDir: string, matcher: ContextMatcher): Promise<string[]> {
  const kept: string[] = [];
  const walk = async (rel: string): Promise<boolean> => {
    let keptBelow = false;
    const entries = await readdir(join(contextDir, rel), { withFileTypes: true });
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) {
        if (matcher.skipsDirectory(path)) continue;
        const at = kept.length;
        const inside = await walk(path);
        if (inside || !matcher.excludes(path)) {
          kept.splice(at, 0, `${path}/`);
          keptBelow = true;
        }
      } else if (!matcher.excludes(path)) {
        kept.push(path);
        keptBelow = true;
      }
    }
    return keptBelow;
  };
  await walk("");
  return kept;
}

async function contextWith(dockerignore: string, files: Record<string, string>): Promise<string[]> {
  await makeTree(root, { ...files, ".dockerignore": dockerignore });
  const patterns = await readDockerignore(root, join(root, "Dockerfile"));
  return keptPaths(root, createContextMatcher(patterns));
}

const excludes = (patterns: string[], path: string): boolean => createContextMatcher(patterns).excludes(path);

describe("reading an ignore file", () => {
  it("reads lines as Docker does: comments, blanks, trimming, leading slash, cleaning, exceptions", () => {
    const text = [
      "test1",
      "/test2",
      "/a/file/here",
      "",
      "lastfile",
      "# this is a comment",
      "! /inverted/abs/path",
      "!",
      "! ",
    ].join("\n");
    expect(parseDockerignore(text)).toEqual([
      "test1",
      "test2",
      "a/file/here",
      "lastfile",
      "!inverted/abs/path",
      "!",
      "!",
    ]);
  });

  it("cleans patterns like paths", () => {
    expect(parseDockerignore("./a/./b/../c/\n//x//y\ndir/\n/\n!/\n../up")).toEqual([
      "a/c",
      "x/y",
      "dir",
      "/",
      "!/",
      "../up",
    ]);
  });

  it("drops a byte-order mark and CRLF line ends", () => {
    expect(parseDockerignore("\uFEFFnode_modules\r\n*.log\r\n")).toEqual(["node_modules", "*.log"]);
  });

  it("treats only a # in the first column as a comment", () => {
    expect(parseDockerignore("#comment\n  #not-a-comment\n\t# nor this")).toEqual([
      "#not-a-comment",
      "# nor this",
    ]);
  });

  it("trims the whitespace Go trims (U+0085 yes, U+FEFF inside the file no)", () => {
    expect(parseDockerignore("\u0085a\u00a0\nb\uFEFF")).toEqual(["a", "b\uFEFF"]);
  });
});

describe("which ignore file a build uses", () => {
  it("uses <Dockerfile>.dockerignore beside the Dockerfile before the context's .dockerignore", async () => {
    await makeTree(root, {
      ".dockerignore": "*.md\n",
      "build/Dockerfile.dev": "FROM scratch\n",
      "build/Dockerfile.dev.dockerignore": "*.log\n",
      "notes.md": "",
      "debug.log": "",
    });
    const patterns = await readDockerignore(root, join(root, "build/Dockerfile.dev"));
    expect(patterns).toEqual(["*.log"]);
    expect(await keptPaths(root, createContextMatcher(patterns))).toEqual([
      ".dockerignore",
      "build/",
      "build/Dockerfile.dev",
      "build/Dockerfile.dev.dockerignore",
      "notes.md",
    ]);
  });

  it("falls back to .dockerignore at the context root when the Dockerfile has none", async () => {
    await makeTree(root, { ".dockerignore": "*.md\n", "build/Dockerfile": "FROM scratch\n" });
    expect(await readDockerignore(root, join(root, "build/Dockerfile"))).toEqual(["*.md"]);
  });

  it("lets an empty <Dockerfile>.dockerignore mean 'ignore nothing'", async () => {
    await makeTree(root, { ".dockerignore": "*.md\n", Dockerfile: "", "Dockerfile.dockerignore": "" });
    expect(await readDockerignore(root, join(root, "Dockerfile"))).toEqual([]);
  });

  it("takes a relative Dockerfile path from the current directory, as -f does", async () => {
    await makeTree(root, {
      "ctx/.dockerignore": "a\n",
      "df/Dockerfile": "",
      "df/Dockerfile.dockerignore": "b\n",
    });
    const cwd = process.cwd();
    process.chdir(root);
    try {
      expect(await readDockerignore("ctx", "df/Dockerfile")).toEqual(["b"]);
      expect(await readDockerignore("ctx", "ctx/Dockerfile")).toEqual(["a"]);
    } finally {
      process.chdir(cwd);
    }
  });

  it("returns no patterns when there is no ignore file", async () => {
    expect(await readDockerignore(root, join(root, "Dockerfile"))).toEqual([]);
  });

  it("reports an ignore file that cannot be read, naming it", async () => {
    await mkdir(join(root, ".dockerignore"));
    const failure = readDockerignore(root, join(root, "Dockerfile"));
    await expect(failure).rejects.toBeInstanceOf(DockerignoreError);
    await expect(failure).rejects.toThrow(join(root, ".dockerignore"));
  });
});

describe("what a context keeps", () => {
  const files = {
    Dockerfile: "",
    "README.md": "",
    "main.go": "",
    "docs/guide.md": "",
    "docs/README.md": "",
    "src/app.ts": "",
    "src/app.test.ts": "",
    "src/lib/util.ts": "",
    "node_modules/pkg/index.js": "",
    ".git/HEAD": "",
  };

  it("* matches within one directory level only", async () => {
    expect(await contextWith("*.md\n", files)).toEqual([
      ".dockerignore",
      ".git/",
      ".git/HEAD",
      "Dockerfile",
      "docs/",
      "docs/README.md",
      "docs/guide.md",
      "main.go",
      "node_modules/",
      "node_modules/pkg/",
      "node_modules/pkg/index.js",
      "src/",
      "src/app.test.ts",
      "src/app.ts",
      "src/lib/",
      "src/lib/util.ts",
    ]);
  });

  it("** matches any number of directories, including none", async () => {
    const kept = await contextWith("**/*.md\n**/*.test.ts\n", files);
    expect(kept.filter((p) => p.endsWith(".md") || p.endsWith(".test.ts"))).toEqual([]);
    expect(kept).toContain("src/app.ts");
  });

  it("a pattern naming a directory excludes everything inside it", async () => {
    const kept = await contextWith("node_modules\n.git\n", files);
    expect(kept.some((p) => p.startsWith("node_modules") || p.startsWith(".git"))).toBe(false);
  });

  it("an exception re-includes a file inside an excluded directory (and the directories leading to it)", async () => {
    const kept = await contextWith("docs\n!docs/README.md\n", files);
    expect(kept.filter((p) => p.startsWith("docs"))).toEqual(["docs/", "docs/README.md"]);
  });

  it("the last matching pattern wins", async () => {
    const kept = await contextWith("*.md\n!README.md\nREADME.md\n", files);
    expect(kept).not.toContain("README.md");
    const rekept = await contextWith("README.md\n*.md\n!README.md\n", files);
    expect(rekept).toContain("README.md");
  });

  it("an exception before the exclusion it should override has no effect", async () => {
    expect(await contextWith("!README.md\n*.md\n", files)).not.toContain("README.md");
  });

  it("excluding everything and re-including a few paths keeps only those", async () => {
    expect(await contextWith("*\n!src\n!Dockerfile\nsrc/**/*.test.ts\n", files)).toEqual([
      "Dockerfile",
      "src/",
      "src/app.ts",
      "src/lib/",
      "src/lib/util.ts",
    ]);
  });

  it("? matches one character and [...] a set of characters", async () => {
    const kept = await contextWith("main.g?\nsrc/[a-b]pp.ts\n", files);
    expect(kept).not.toContain("main.go");
    expect(kept).not.toContain("src/app.ts");
    expect(kept).toContain("src/app.test.ts");
  });

  it("a leading / and a trailing / make no difference", async () => {
    expect(await contextWith("/docs/\n", files)).toEqual(await contextWith("docs\n", files));
  });

  it("a pattern does not match a name deeper in the tree (unlike .gitignore)", async () => {
    expect(await contextWith("README.md\n", files)).toContain("docs/README.md");
  });

  it("keeps an empty directory unless it is excluded", async () => {
    expect(await contextWith("cache\n", { "empty/": "", "cache/": "" })).toEqual([".dockerignore", "empty/"]);
  });

  it("matches names with regular-expression characters literally", async () => {
    const wheel = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
    expect(await contextWith("dist/*.whl\n", { [wheel]: "", "a(b)c/def": "" })).toEqual([
      ".dockerignore",
      "a(b)c/",
      "a(b)c/def",
      "dist/",
    ]);
  });

  it("matches a directory name with parentheses literally", async () => {
    expect(await contextWith("a(b)c\n", { "a(b)c/def": "", "abc/def": "" })).toEqual([
      ".dockerignore",
      "abc/",
      "abc/def",
    ]);
  });

  it("is case-sensitive, as on Linux", async () => {
    expect(await contextWith("readme.md\n", { "README.md": "" })).toContain("README.md");
  });

  it("never excludes the context root", () => {
    expect(excludes(["*", "**", "."], "")).toBe(false);
    expect(excludes(["*"], ".")).toBe(false);
  });
});

describe("pattern semantics (moby/patternmatcher's cases)", () => {
  // [pattern, path, excluded]: the path itself or one of its parent directories matches.
  const cases: Array<[string, string, boolean]> = [
    ["**", "file", true],
    ["**", "file/", true],
    ["**/", "file", true],
    ["**/", "file/", true],
    ["**", "dir/file", true],
    ["**/", "dir/file", true],
    ["**", "dir/file/", true],
    ["**/", "dir/file/", true],
    ["**/**", "dir/file", true],
    ["**/**", "dir/file/", true],
    ["dir/**", "dir/file", true],
    ["dir/**", "dir/file/", true],
    ["dir/**", "dir/dir2/file", true],
    ["dir/**", "dir/dir2/file/", true],
    ["**/dir", "dir", true],
    ["**/dir", "dir/file", true],
    ["**/dir2/*", "dir/dir2/file", true],
    ["**/dir2/*", "dir/dir2/file/", true],
    ["**/dir2/**", "dir/dir2/dir3/file", true],
    ["**/dir2/**", "dir/dir2/dir3/file/", true],
    ["**file", "file", true],
    ["**file", "dir/file", true],
    ["**/file", "dir/file", true],
    ["**file", "dir/dir/file", true],
    ["**/file", "dir/dir/file", true],
    ["**/file*", "dir/dir/file", true],
    ["**/file*", "dir/dir/file.txt", true],
    ["**/file*txt", "dir/dir/file.txt", true],
    ["**/file*.txt", "dir/dir/file.txt", true],
    ["**/file*.txt*", "dir/dir/file.txt", true],
    ["**/**/*.txt", "dir/dir/file.txt", true],
    ["**/**/*.txt2", "dir/dir/file.txt", false],
    ["**/*.txt", "file.txt", true],
    ["**/**/*.txt", "file.txt", true],
    ["a**/*.txt", "a/file.txt", true],
    ["a**/*.txt", "a/dir/file.txt", true],
    ["a**/*.txt", "a/dir/dir/file.txt", true],
    ["a/*.txt", "a/dir/file.txt", false],
    ["a/*.txt", "a/file.txt", true],
    ["a/*.txt**", "a/file.txt", true],
    ["a[b-d]e", "ae", false],
    ["a[b-d]e", "ace", true],
    ["a[b-d]e", "aae", false],
    ["a[^b-d]e", "aze", true],
    [".*", ".foo", true],
    [".*", "foo", false],
    ["abc.def", "abcdef", false],
    ["abc.def", "abc.def", true],
    ["abc.def", "abcZdef", false],
    ["abc?def", "abcZdef", true],
    ["abc?def", "abcdef", false],
    ["**/foo/bar", "foo/bar", true],
    ["**/foo/bar", "dir/foo/bar", true],
    ["**/foo/bar", "dir/dir2/foo/bar", true],
    ["abc/**", "abc", false],
    ["abc/**", "abc/def", true],
    ["abc/**", "abc/def/ghi", true],
    ["**/.foo", ".foo", true],
    ["**/.foo", "bar.foo", false],
    ["a(b)c/def", "a(b)c/def", true],
    ["a(b)c/def", "a(b)c/xyz", false],
    ["a.|)$(}+{bc", "a.|)$(}+{bc", true],
    ["dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true],
    ["a\\\\", "a\\", true],
    ["a\\*b", "a*b", true],
    // From Go's filepath.Match tests, as patternmatcher runs them.
    ["abc", "abc", true],
    ["*", "abc", true],
    ["*c", "abc", true],
    ["a*", "a", true],
    ["a*", "abc", true],
    ["a*", "ab/c", true],
    ["a*/b", "abc/b", true],
    ["a*/b", "a/c/b", false],
    ["a*b*c*d*e*/f", "axbxcxdxe/f", true],
    ["a*b*c*d*e*/f", "axbxcxdxexxx/f", true],
    ["a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false],
    ["a*b*c*d*e*/f", "axbxcxdxexxx/fff", false],
    ["a*b?c*x", "abxbbxdbxebxczzx", true],
    ["a*b?c*x", "abxbbxdbxebxczzy", false],
    ["ab[c]", "abc", true],
    ["ab[b-d]", "abc", true],
    ["ab[e-g]", "abc", false],
    ["ab[^c]", "abc", false],
    ["ab[^b-d]", "abc", false],
    ["ab[^e-g]", "abc", true],
    ["a\\*b", "ab", false],
    ["a?b", "a☺b", true],
    ["a[^a]b", "a☺b", true],
    ["a???b", "a☺b", false],
    ["a[^a][^a][^a]b", "a☺b", false],
    ["[a-ζ]*", "α", true],
    ["*[a-ζ]", "A", false],
    ["a?b", "a/b", false],
    ["a*b", "a/b", false],
    ["[\\]a]", "]", true],
    ["[\\-]", "-", true],
    ["[x\\-]", "x", true],
    ["[x\\-]", "-", true],
    ["[x\\-]", "z", false],
    ["[\\-x]", "x", true],
    ["[\\-x]", "-", true],
    ["[\\-x]", "a", false],
    ["*x", "xxx", true],
  ];
  it.each(cases)("%j against %j excludes: %j", (pattern, path, expected) => {
    expect(excludes([pattern], path)).toBe(expected);
  });

  const multi: Array<[string[], string, boolean]> = [
    [["**", "!util/docker/web"], "util/docker/web/foo", false],
    [["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", true],
    [
      ["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
      "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
      false,
    ],
    [["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false],
    [["docs", "!docs/README.md"], "docs/README.md", false],
    [["docs/", "!docs/README.md"], "docs/README.md", false],
    [["docs/*", "!docs/README.md"], "docs/README.md", false],
    [["*.go", "!fileutils.go"], "fileutils.go", false],
    [["!fileutils.go", "*.go"], "fileutils.go", true],
  ];
  it.each(multi)("%j against %j excludes: %j", (patterns, path, expected) => {
    expect(excludes(patterns, path)).toBe(expected);
  });

  it("evaluates children from their directory's results, as BuildKit's walk does", () => {
    // `!d` was skipped for directory d (nothing was excluded yet), so for d/f it is only tried on
    // "d/f" itself. patternmatcher's MatchesOrParentMatches would keep d/f; BuildKit does not.
    expect(excludes(["d/f", "!d"], "d/f")).toBe(true);
    expect(excludes(["d", "!d"], "d/f")).toBe(false);
  });

  it("reads **text as a suffix test, so **.txt matches .txt files at any depth", () => {
    expect(excludes(["**.txt"], "a/b/c.txt")).toBe(true);
    expect(excludes(["**/.txt"], "a/b/c.txt")).toBe(false);
  });

  it("keeps Go's regular-expression reading of escapes and classes inside patterns", () => {
    expect(excludes(["file\\d"], "file7")).toBe(true);
    expect(excludes(["[[:digit:]]x"], "7x")).toBe(true);
    // `*` inside brackets becomes part of the regular expression, not a literal star.
    expect(excludes(["[*]"], "*")).toBe(false);
    expect(excludes(["[*]"], "]")).toBe(true);
  });

  it("matches file names with newlines as Go does: ? and * cross them, a regular expression's .* does not", () => {
    expect(excludes(["a?b"], "a\nb")).toBe(true);
    expect(excludes(["a*"], "a\nb")).toBe(true);
    // `a/**` is a prefix test; `**/**` becomes `^(.*/)?.*$`, whose `.` stops at a newline.
    expect(excludes(["a/**"], "a/x\ny")).toBe(true);
    expect(excludes(["**/**"], "x\ny/z")).toBe(false);
  });

  it("accepts paths with ./ and a leading /", () => {
    expect(excludes(["docs"], "./docs/guide.md")).toBe(true);
    expect(excludes(["docs"], "/docs/guide.md")).toBe(true);
  });
});

describe("patterns Docker rejects", () => {
  const invalid: Array<[string, string]> = [
    ["!", "an exception needs a path"],
    ["[", "unterminated character class"],
    ["[^", "unterminated character class"],
    ["[^bc", "unterminated character class"],
    ["a[", "unterminated character class"],
    ["[]a]", 'unexpected "]"'],
    ["[-]", 'unexpected "-"'],
    ["[x-]", 'unexpected "]"'],
    ["[-x]", 'unexpected "-"'],
    ["[a-b-c]", 'unexpected "-"'],
    ["\\", "trailing backslash"],
    ["[z-a]", "invalid character class range"],
    ["a\\yb", "invalid escape sequence"],
  ];
  it.each(invalid)("rejects %j (%s)", (pattern, reason) => {
    expect(() => createContextMatcher([pattern])).toThrow(DockerignoreError);
    expect(() => createContextMatcher([pattern])).toThrow(reason);
    expect(() => createContextMatcher([pattern])).toThrow(`"${pattern}"`);
  });

  it("gives the error code E_DOCKERIGNORE", () => {
    try {
      createContextMatcher(["["]);
      expect.unreachable();
    } catch (err) {
      expect((err as DockerignoreError).code).toBe("E_DOCKERIGNORE");
    }
  });

  it("ignores empty and whitespace-only patterns", () => {
    expect(excludes(["", "   "], "a")).toBe(false);
  });
});

describe("skipping directories during a walk", () => {
  it("skips an excluded directory when no exception can reach inside", () => {
    const matcher = createContextMatcher(["node_modules", "docs", "!docs/README.md"]);
    expect(matcher.skipsDirectory("node_modules")).toBe(true);
    expect(matcher.skipsDirectory("docs")).toBe(false);
    expect(matcher.skipsDirectory("src")).toBe(false);
  });

  it("never skips when an exception has wildcards, since it could match anywhere", () => {
    const matcher = createContextMatcher(["node_modules", "!**/keep.txt"]);
    expect(matcher.skipsDirectory("node_modules")).toBe(false);
    expect(matcher.excludes("node_modules/a/keep.txt")).toBe(false);
    expect(matcher.excludes("node_modules/a/other.txt")).toBe(true);
  });

  it("treats exceptions ending in /* or /** as plain paths", () => {
    const matcher = createContextMatcher(["*", "!src/**"]);
    expect(matcher.skipsDirectory("vendor")).toBe(true);
    expect(matcher.skipsDirectory("src")).toBe(false);
  });
});
