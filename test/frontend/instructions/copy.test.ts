import { describe, expect, it } from "vitest";
import { errorOf, parseLast } from "./node.js";

describe("COPY and ADD", () => {
  it("COPY --chown=app:app --chmod=755 a b /dst gives the raw source words and the destination", () => {
    expect(parseLast("COPY --chown=app:app --chmod=755 a b /dst")).toEqual(
      expect.objectContaining({
        kind: "copy",
        sources: ["a", "b"],
        dest: "/dst",
        heredocs: [],
        chown: "app:app",
        chmod: "755",
        link: false,
        parents: false,
        exclude: [],
      }),
    );
  });

  it("COPY --from refuses a variable, as BuildKit does, with its workaround", () => {
    expect(errorOf("COPY --from=$FOO . .").reason).toBe(
      "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
    );
    expect(errorOf("COPY --from=${STAGE:-build} /a /b").reason).toContain(
      "variable expansion is not supported",
    );
  });

  it("COPY takes --from, --link, --parents and repeated --exclude", () => {
    const copy = parseLast("COPY --from=build --link --parents --exclude=*.md --exclude=tmp ./src/ /app/");
    expect(copy).toMatchObject({
      from: "build",
      link: true,
      parents: true,
      exclude: ["*.md", "tmp"],
      sources: ["./src/"],
      dest: "/app/",
    });
    expect(copy).not.toHaveProperty("checksum");
    expect(copy).not.toHaveProperty("keepGitDir");
  });

  it("variables stay unexpanded", () => {
    expect(parseLast("COPY --chown=$UID $SRC $DEST")).toMatchObject({
      chown: "$UID",
      sources: ["$SRC"],
      dest: "$DEST",
    });
  });

  it('JSON form takes the elements, spaces and all: COPY ["test file", "/tmp/"]', () => {
    expect(parseLast('COPY ["test file", "other", "/tmp/"]')).toMatchObject({
      sources: ["test file", "other"],
      dest: "/tmp/",
    });
  });

  it("ADD takes --checksum, --keep-git-dir, --unpack besides --chown, --chmod, --link, --exclude", () => {
    const add = parseLast(
      "ADD --checksum=sha256:abc --keep-git-dir --unpack=false --chown=1:1 --chmod=644 --link --exclude=x https://example.com/a.tar.gz /a/",
    );
    expect(add).toMatchObject({
      kind: "add",
      checksum: "sha256:abc",
      keepGitDir: true,
      unpack: false,
      chown: "1:1",
      chmod: "644",
      link: true,
      exclude: ["x"],
      sources: ["https://example.com/a.tar.gz"],
      dest: "/a/",
    });
  });

  it("ADD without --unpack leaves it unset (archives from the context unpack, downloads do not)", () => {
    const add = parseLast("ADD a.tar /a/");
    expect(add).toMatchObject({ keepGitDir: false, link: false, parents: false });
    expect(add).not.toHaveProperty("unpack");
    expect(parseLast("ADD --unpack a.tar /a/")).toMatchObject({ unpack: true });
  });

  it("ADD does not take --from or --parents, COPY does not take --checksum", () => {
    expect(errorOf("ADD --from=build a /b").reason).toMatch(/^unknown flag: --from for ADD/);
    expect(errorOf("ADD --parents a /b").reason).toMatch(/^unknown flag: --parents for ADD/);
    expect(errorOf("COPY --checksum=sha256:abc a /b").reason).toMatch(/^unknown flag: --checksum for COPY/);
  });

  it("COPY with one argument has no destination", () => {
    expect(errorOf("FROM a\nCOPY file")).toEqual({
      reason:
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
      at: "2:1",
    });
    expect(errorOf("ADD").reason).toMatch(/^ADD requires at least two arguments/);
  });

  it("COPY <<EOF /dest takes the heredoc as a source file", () => {
    const copy = parseLast("COPY <<EOF <<-'CONF' extra.txt /etc/app/\nhello\nEOF\n\tkey=value\nCONF");
    expect(copy).toMatchObject({
      sources: ["extra.txt"],
      dest: "/etc/app/",
      heredocs: [
        { name: "EOF", content: "hello\n", expand: true },
        { name: "CONF", content: "key=value\n", expand: false, chomp: true },
      ],
    });
  });

  it("a heredoc as the destination is an error", () => {
    expect(errorOf("COPY a <<EOF\nx\nEOF")).toEqual({
      reason: "COPY cannot accept a heredoc as a destination",
      at: "1:8",
    });
  });
});
