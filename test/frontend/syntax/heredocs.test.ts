import { describe, expect, it } from "vitest";
import { dump, parse, rejection } from "./parse.js";

const heredocsOf = (source: string) =>
  parse(source).instructions.map((i) => i.heredocs.map(({ range, ...h }) => h));

describe("heredocs", () => {
  it("RUN <<EOF: the command is the word, the body the lines up to the delimiter", () => {
    const source = "FROM a\nRUN <<EOF\necho hi\necho $HOME\nEOF\nCMD x\n";
    expect(dump(source)).toEqual(['(from "a")', '(run "<<EOF")', '(cmd "x")']);
    expect(heredocsOf(source)[1]).toEqual([
      { name: "EOF", content: "echo hi\necho $HOME\n", expand: true, chomp: false, fileDescriptor: 0 },
    ]);
  });

  it("RUN <<EOF bash and RUN python3 <<EOF keep the rest of the command", () => {
    expect(dump("FROM a\nRUN <<EOF bash\nx\nEOF\n")[1]).toBe('(run "<<EOF bash")');
    const source = "FROM a\nRUN python3 <<EOF\nprint(1)\nEOF\n";
    expect(dump(source)[1]).toBe('(run "python3 <<EOF")');
    expect(heredocsOf(source)[1]![0]!.content).toBe("print(1)\n");
  });

  it("COPY <<EOF /path: the heredoc is a source file", () => {
    const source = "FROM a\nCOPY <<EOF /path/file\nhello\nEOF\n";
    expect(dump(source)[1]).toBe('(copy "<<EOF" "/path/file")');
    expect(heredocsOf(source)[1]![0]).toMatchObject({ name: "EOF", content: "hello\n" });
  });

  it("ADD takes heredocs too", () => {
    expect(heredocsOf("FROM a\nADD <<EOF /x\nbody\nEOF\n")[1]![0]!.content).toBe("body\n");
  });

  it("<<-EOF strips leading tabs from the body and from the delimiter line", () => {
    const source = "FROM a\nRUN <<-EOF\n\techo hi\n\t\t  indented\n  spaces stay\n\t\tEOF\n";
    expect(heredocsOf(source)[1]).toEqual([
      {
        name: "EOF",
        content: "echo hi\n  indented\n  spaces stay\n",
        expand: true,
        chomp: true,
        fileDescriptor: 0,
      },
    ]);
  });

  it("without the dash, an indented delimiter does not end the heredoc", () => {
    const source = "FROM a\nRUN <<EOF\n\tEOF\nEOF \n EOF\nEOF\n";
    expect(heredocsOf(source)[1]![0]!.content).toBe("\tEOF\nEOF \n EOF\n");
  });

  it("a quoted delimiter makes the body literal (expand false)", () => {
    const source = 'FROM a\nRUN <<\'EOF\'\n$A\nEOF\nRUN <<"EOF"\n$B\nEOF\nRUN <<E"O"F\n$C\nEOF\n';
    expect(heredocsOf(source).slice(1)).toEqual([
      [{ name: "EOF", content: "$A\n", expand: false, chomp: false, fileDescriptor: 0 }],
      [{ name: "EOF", content: "$B\n", expand: false, chomp: false, fileDescriptor: 0 }],
      [{ name: "EOF", content: "$C\n", expand: false, chomp: false, fileDescriptor: 0 }],
    ]);
  });

  it("two heredocs on one line are read one after the other", () => {
    const source = "FROM a\nRUN <<A cat - /dev/fd/3 3<<-B\nfirst\nA\n\tsecond\n\tB\nCMD x\n";
    expect(dump(source)).toEqual(['(from "a")', '(run "<<A cat - /dev/fd/3 3<<-B")', '(cmd "x")']);
    expect(heredocsOf(source)[1]).toEqual([
      { name: "A", content: "first\n", expand: true, chomp: false, fileDescriptor: 0 },
      { name: "B", content: "second\n", expand: true, chomp: true, fileDescriptor: 3 },
    ]);
  });

  it("a body line may look like an instruction, a comment, a continuation or a blank line", () => {
    const source = "FROM a\nRUN <<EOF\n# not a comment\nFROM x \\\n\nEOF\n";
    expect(dump(source)).toEqual(['(from "a")', '(run "<<EOF")']);
    expect(heredocsOf(source)[1]![0]!.content).toBe("# not a comment\nFROM x \\\n\n");
  });

  it("keeps the body's line endings as written, and a delimiter line may end in CRLF", () => {
    expect(heredocsOf("FROM a\r\nRUN <<EOF\r\nx\r\nEOF\r\n")[1]![0]!.content).toBe("x\r\n");
  });

  it("may be opened on a continued line", () => {
    const source = "FROM a\nRUN cat <<EOF \\\n  | wc -l\nbody\nEOF\n";
    expect(dump(source)[1]).toBe('(run "cat <<EOF   | wc -l")');
    expect(heredocsOf(source)[1]![0]!.content).toBe("body\n");
  });

  it("ONBUILD RUN <<EOF reads the body too", () => {
    const source = "FROM a\nONBUILD RUN <<EOF\nx\nEOF\n";
    expect(dump(source)[1]).toBe('(onbuild (run "<<EOF"))');
    const onbuild = parse(source).instructions[1]!;
    expect(onbuild.heredocs.map((h) => h.content)).toEqual(["x\n"]);
    expect(onbuild.inner!.heredocs.map((h) => h.content)).toEqual(["x\n"]);
  });

  it("are not read for the exec form or for other instructions", () => {
    expect(dump('FROM a\nRUN ["cat", "<<EOF"]\nCMD x\n')).toEqual([
      '(from "a")',
      '(run "cat" "<<EOF")',
      '(cmd "x")',
    ]);
    expect(dump("FROM a\nCMD cat <<EOF\nRUN x\n")).toEqual(['(from "a")', '(cmd "cat <<EOF")', '(run "x")']);
  });

  it("blanks may separate << from the delimiter, as in BuildKit's own tests", () => {
    const names = (line: string, delimiter = "EOF") =>
      heredocsOf(`FROM a\n${line}\n${delimiter}\n`)[1]!.map((h) => h.name);
    expect(names("RUN <<  EOF")).toEqual(["EOF"]);
    expect(names("RUN <<  EOF  > foo")).toEqual(["EOF"]);
    expect(names("RUN << -EOF", "-EOF")).toEqual(["-EOF"]);
    expect(names("RUN cat <<\tEOF")).toEqual(["EOF"]);
  });

  it("matches BuildKit's cases of quoting and escaping in the delimiter", () => {
    const heredoc = (line: string, body: string) => {
      const [first] = heredocsOf(`FROM a\n${line}\n${body}\n`)[1]!;
      return [first!.name, first!.expand];
    };
    expect(heredoc("RUN <<eo'f'", "eof")).toEqual(["eof", false]);
    expect(heredoc("RUN <<eo\\'f", "eo'f")).toEqual(["eo'f", true]);
    expect(heredoc("RUN <<'e'o\\'f", "eo'f")).toEqual(["eo'f", false]);
    expect(heredoc("RUN <<'one two'", "one two")).toEqual(["one two", false]);
    expect(heredoc("RUN <<$EOF", "$EOF")).toEqual(["$EOF", true]);
    expect(heredoc("COPY <<file.txt /dest", "file.txt")).toEqual(["file.txt", true]);
  });

  it("reads several bodies in the order of their markers, each to its own delimiter", () => {
    expect(
      heredocsOf("FROM a\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n")[1]!.map((h) => [h.name, h.content]),
    ).toEqual([
      ["X", "Y\n"],
      ["Y", "X\n"],
    ]);
  });

  it("USER <<INVALID opens nothing: the next line is an instruction again", () => {
    expect(rejection("FROM a\nUSER <<INVALID\nINVALID\n")).toBe("3:1 unknown instruction: INVALID");
  });

  it("a word that is not a delimiter opens nothing", () => {
    expect(dump("FROM a\nRUN echo '<<EOF' <<\"\" a<<b\nCMD x\n")).toEqual([
      '(from "a")',
      '(run "echo \'<<EOF\' <<\\"\\" a<<b")',
      '(cmd "x")',
    ]);
  });

  it("cover the range from the marker to the delimiter line", () => {
    const ast = parse("FROM a\nRUN cat <<EOF\nx\nEOF\n");
    expect(ast.instructions[1]!.heredocs[0]!.range).toEqual({
      start: { line: 2, column: 9 },
      end: { line: 4, column: 4 },
    });
    expect(ast.instructions[1]!.range.end).toEqual({ line: 4, column: 4 });
  });

  it("an unterminated heredoc is an error at its marker", () => {
    expect(rejection("FROM a\nRUN cat <<EOF\necho hi\n")).toBe("2:9 unterminated heredoc");
    expect(rejection("FROM a\nRUN <<A <<B\nA\nB is not alone\n")).toBe("2:9 unterminated heredoc");
  });

  it("a delimiter the shell cannot read is an error", () => {
    const unclosed = "$" + "{x:-a";
    expect(rejection(`FROM a\nRUN <<${unclosed} b}\n`)).toBe(
      `2:5 failed to process "${unclosed}": syntax error: missing '}'`,
    );
  });
});
