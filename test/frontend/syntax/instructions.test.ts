import { describe, expect, it } from "vitest";
import { dump, parse, rejection } from "./parse.js";

/** The dump of one instruction after a FROM. */
const line = (instruction: string) => dump(`FROM a\n${instruction}\n`)[1];

describe("keywords", () => {
  it("are case-insensitive: the node keeps the spelling, its name is lower-case", () => {
    const [from, run] = parse("from a\nRuN b\n").instructions;
    expect([from!.keyword, from!.name, run!.keyword, run!.name]).toEqual(["from", "from", "RuN", "run"]);
    expect(dump("from a\nRuN b\n")).toEqual(['(from "a")', '(run "b")']);
  });

  it("are separated from the arguments by blanks, tabs included", () => {
    expect(dump("FROM\tubuntu\nRUN \t echo\n")).toEqual(['(from "ubuntu")', '(run "echo")']);
  });

  it("may have no arguments", () => {
    expect(dump("FROM a\nRUN\nCMD\nENV\nARG\nVOLUME\nUSER\nHEALTHCHECK\nONBUILD\n").slice(1)).toEqual([
      "(run)",
      "(cmd)",
      "(env)",
      "(arg)",
      "(volume)",
      "(user)",
      "(healthcheck)",
      "(onbuild)",
    ]);
  });
});

describe("flags", () => {
  it("are the --words at the start, quotes removed, the rest are arguments", () => {
    expect(line("COPY --from=build --chown=1:2 a /b")).toBe('(copy ["--from=build" "--chown=1:2"] "a" "/b")');
    expect(line('COPY --chown="a b" x y')).toBe('(copy ["--chown=a b"] "x" "y")');
    expect(line("RUN --mount=type=cache,target=/root echo --not-a-flag")).toBe(
      '(run ["--mount=type=cache,target=/root"] "echo --not-a-flag")',
    );
  });

  it("end at --, which is dropped", () => {
    expect(line("COPY --a=1 -- --b c")).toBe('(copy ["--a=1"] "--b" "c")');
    expect(line("CMD --doit -- [ ]")).toBe('(cmd ["--doit"])');
  });

  it("take the escape token to escape a character", () => {
    expect(line("COPY --x=a\\ b c d")).toBe('(copy ["--x=a b"] "c" "d")');
  });

  it("read non-ASCII bytes one by one, as BuildKit does", () => {
    expect(line("COPY --chown=jöhn a b")).toBe('(copy ["--chown=jÃ¶hn"] "a" "b")');
  });

  it("may be all there is", () => {
    expect(line("RUN --network=none")).toBe('(run ["--network=none"])');
  });
});

describe("exec form (JSON) or shell form", () => {
  it("a JSON array of strings is the exec form", () => {
    const run = parse('FROM a\nRUN ["echo", "a b"]\n').instructions[1]!;
    expect([run.args, run.json]).toEqual([["echo", "a b"], true]);
    expect(line('CMD [ "a" , "b" ]')).toBe('(cmd "a" "b")');
    expect(line("ENTRYPOINT []")).toBe("(entrypoint)");
    expect(line('SHELL ["/bin/sh", "-c"]')).toBe('(shell "/bin/sh" "-c")');
  });

  it("decodes JSON escapes", () => {
    expect(line('CMD ["\\u00e9\\t\\"\\\\", "\\ud83d\\ude00"]')).toBe('(cmd "é\\t\\"\\\\" "😀")');
  });

  it("anything that is not a JSON array is the shell form, kept as written", () => {
    const run = parse("FROM a\nRUN echo [a]\n").instructions[1]!;
    expect([run.args, run.json]).toEqual([["echo [a]"], false]);
    expect(line("CMD ['a', 'b']")).toBe("(cmd \"['a', 'b']\")");
    expect(line('CMD ["a", ]')).toBe('(cmd "[\\"a\\", ]")');
    expect(line('CMD ["a"] b')).toBe('(cmd "[\\"a\\"] b")');
    expect(line('CMD ["unterminated]')).toBe('(cmd "[\\"unterminated]")');
    expect(line('CMD ["tab\there"]')).toBe('(cmd "[\\"tab\\there\\"]")');
  });

  it("a JSON number Go cannot hold makes it the shell form", () => {
    expect(line("CMD [1e400]")).toBe('(cmd "[1e400]")');
  });

  it("a JSON array with an element that is not a string is an error", () => {
    expect(rejection('FROM a\nCMD ["a", 1]\n')).toBe(
      "2:5 when using JSON array syntax, arrays must be comprised of strings only",
    );
    expect(rejection("FROM a\nRUN  [null]\n")).toBe(
      "2:6 when using JSON array syntax, arrays must be comprised of strings only",
    );
    expect(rejection('FROM a\nCOPY [{"a": "b"}]\n')).toMatch(/^2:6 when using JSON array syntax/);
    expect(rejection('FROM a\nHEALTHCHECK CMD ["a", true]\n')).toMatch(/^2:17 when using JSON array syntax/);
  });
});

describe("instruction arguments", () => {
  it("FROM and EXPOSE: words separated by blanks", () => {
    expect(line("FROM --platform=linux/arm64 b  AS   c")).toBe(
      '(from ["--platform=linux/arm64"] "b" "AS" "c")',
    );
    expect(line("EXPOSE 80/tcp\t443")).toBe('(expose "80/tcp" "443")');
  });

  it("COPY, ADD and VOLUME: JSON, or words separated by blanks", () => {
    expect(line("COPY a b /c/")).toBe('(copy "a" "b" "/c/")');
    expect(line('ADD ["a b", "/c"]')).toBe('(add "a b" "/c")');
    expect(line("VOLUME /a /b")).toBe('(volume "/a" "/b")');
    expect(line('VOLUME ["/a"]')).toBe('(volume "/a")');
  });

  it("RUN, CMD, ENTRYPOINT and SHELL in shell form: the whole text", () => {
    expect(line("RUN echo 'a  b' && ls")).toBe("(run \"echo 'a  b' && ls\")");
    expect(line("ENTRYPOINT exec top -b")).toBe('(entrypoint "exec top -b")');
  });

  it("USER, WORKDIR, STOPSIGNAL and MAINTAINER: the whole text", () => {
    expect(line("USER app:app")).toBe('(user "app:app")');
    expect(line("WORKDIR /my dir")).toBe('(workdir "/my dir")');
    expect(line("STOPSIGNAL SIGKILL")).toBe('(stopsignal "SIGKILL")');
    expect(line("MAINTAINER A B <a@b.c>")).toBe('(maintainer "A B <a@b.c>")');
  });

  it("ENV name=value pairs: key, value (quotes kept) and '='", () => {
    expect(line('ENV A=1 B="two words" C=')).toBe('(env "A" "1" "=" "B" "\\"two words\\"" "=" "C" "" "=")');
    expect(line("ENV A=x\\ y")).toBe('(env "A" "x\\\\ y" "=")');
  });

  it("ENV name value: key, the rest of the line, and ''", () => {
    expect(line("ENV PATH /usr/bin:/bin  extra")).toBe('(env "PATH" "/usr/bin:/bin  extra" "")');
  });

  it("LABEL works like ENV", () => {
    expect(line('LABEL a=b "c d"="e"')).toBe('(label "a" "b" "=" "\\"c d\\"" "\\"e\\"" "=")');
    expect(line("LABEL maintainer someone")).toBe('(label "maintainer" "someone" "")');
  });

  it("ARG: names with optional values, quotes kept", () => {
    expect(line('ARG a b=c d="e f"')).toBe('(arg "a" "b=c" "d=\\"e f\\"")');
  });

  it("HEALTHCHECK: the type word, then a command as for CMD", () => {
    expect(line("HEALTHCHECK NONE")).toBe('(healthcheck "NONE")');
    expect(line("HEALTHCHECK --interval=5s CMD curl -f http://x/ || exit 1")).toBe(
      '(healthcheck ["--interval=5s"] "CMD" "curl -f http://x/ || exit 1")',
    );
    const exec = parse('FROM a\nHEALTHCHECK CMD ["curl", "x"]\n').instructions[1]!;
    expect([exec.args, exec.json]).toEqual([["CMD", "curl", "x"], true]);
  });

  it("ONBUILD: the trigger is an instruction of its own, nested", () => {
    const onbuild = parse("FROM a\nONBUILD --x RUN --y echo hi\n").instructions[1]!;
    expect(dump("FROM a\nONBUILD --x RUN --y echo hi\n")[1]).toBe(
      '(onbuild ["--x"] (run ["--y"] "echo hi"))',
    );
    expect(onbuild.args).toEqual([]);
    expect(onbuild.inner).toMatchObject({ keyword: "RUN", name: "run", flags: ["--y"], args: ["echo hi"] });
    expect(onbuild.inner!.original).toBe("RUN --y echo hi");
    expect(line('ONBUILD CMD ["a"]')).toBe('(onbuild (cmd "a"))');
    expect(line("ONBUILD ONBUILD RUN x")).toBe('(onbuild (onbuild (run "x")))');
  });

  it("ONBUILD keeps a trigger BuildKit does not know, as BuildKit's parser does", () => {
    expect(line("ONBUILD FOO bar")).toBe('(onbuild (foo ""))');
  });
});
