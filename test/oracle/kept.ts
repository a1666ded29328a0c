/**
 * The differences from BuildKit 0.8 that tbuild keeps, each with why: the table of docs/compat.md
 * (its rows name these ids). Every one is a place where a later BuildKit changed what 0.8 does,
 * or a bug of 0.8 a later release fixed, and tbuild does what the later BuildKit does; the source
 * of that later behaviour is named in `why`. Except those marked `everyBuildKit`: choices of
 * tbuild's that every BuildKit makes otherwise, `why` saying why tbuild keeps its own; and those
 * marked `notSupportedYet`: what tbuild cannot do yet, `why` saying what is missing.
 *
 * A rule explains a difference only in the shape it describes (an `explains` check on both
 * values): the same field differing in any other way is still a failure.
 */
import type { Difference, RootfsEntry } from "./compare.js";

export interface KeptDifference {
  id: string;
  /** What BuildKit 0.8 (Docker 20.10's) does. */
  buildkit: string;
  /** What tbuild does. */
  tbuild: string;
  why: string;
  /** Whether the rule explains this difference of a case built from `dockerfile`. */
  explains?(difference: Difference, dockerfile: string): boolean;
  /**
   * Whether the rule explains a path of `type` ("Directory", "File") whose mode alone differs,
   * `ours` in tbuild's result and `theirs` in BuildKit's: in the root filesystem, or as a RUN step
   * listed it (explainedBy).
   */
  explainsMode?(type: string, ours: number, theirs: number, dockerfile: string): boolean;
  /**
   * Whether the rule explains a path whose owner ("uid:gid") alone differs, `ours` in tbuild's
   * result and `theirs` in BuildKit's: in the root filesystem, or as a RUN step listed it.
   */
  explainsOwner?(ours: string, theirs: string, dockerfile: string): boolean;
  /**
   * Whether the rule explains a file at `path` that a RUN step listed with `ours` links in tbuild's
   * build and `theirs` in BuildKit's, all else alike (explainedBy).
   */
  explainsLinkCount?(path: string, ours: number, theirs: number, dockerfile: string): boolean;
  /**
   * Whether the rule explains a directory at `path` ("a/b") that only BuildKit's result has, or
   * only BuildKit's RUN step listed, in a case whose context has this `.dockerignore` (explainedBy).
   */
  explainsExtraDirectory?(path: string, dockerignore: string): boolean;
  /**
   * Whether the rule explains tbuild failing, with `error`, on a case BuildKit 0.8 builds, whose
   * context has this `.dockerignore`.
   */
  explainsTbuildFailure?(error: string, dockerignore: string): boolean;
  /** Set when every BuildKit, not only 0.8, does what `buildkit` says: tbuild differs on purpose. */
  everyBuildKit?: true;
  /**
   * Set when every BuildKit does what `buildkit` says and tbuild cannot yet: a gap, `why` saying
   * what is missing. Not a choice: the row says so in docs/compat.md.
   */
  notSupportedYet?: true;
  /**
   * Set when only the random cases (differential.test.ts) showed it: no fixed case does, so a run
   * of every fixed case cannot tell that it went stale.
   */
  foundByRandomCases?: true;
  /** Cases BuildKit 0.8 fails to build (its error matching `error`) where tbuild builds them. */
  buildKitFails?: { cases: string[]; error: RegExp };
}

/** The values of a flag (`--chown=100:200`) on the Dockerfile's instructions `instruction`. */
function flagValues(dockerfile: string, instruction: "ADD" | "COPY", flag: string): string[] {
  const lines = dockerfile.split("\n").filter((line) => new RegExp(`^\\s*${instruction}\\s`, "i").test(line));
  return lines.flatMap((line) => [...line.matchAll(new RegExp(`--${flag}=(\\S+)`, "g"))].map((m) => m[1]!));
}

/** Both sides of a path difference as entries, when both results have the path. */
function entries(d: Difference): [RootfsEntry, RootfsEntry] | undefined {
  if (d.kind !== "path" || d.ours === undefined || d.theirs === undefined) return undefined;
  return [d.ours as RootfsEntry, d.theirs as RootfsEntry];
}

/** Whether two entries are the same but for `field`. */
function onlyDiffer(a: RootfsEntry, b: RootfsEntry, field: keyof RootfsEntry): boolean {
  const without = ({ [field]: _, small: __, ...rest }: RootfsEntry) => JSON.stringify(rest);
  return without(a) === without(b) && a[field] !== b[field];
}

/** The types of stat's `%F` as the root filesystem's entries name them. */
const LISTED_TYPES: Record<string, string> = {
  directory: "Directory",
  "regular file": "File",
  "regular empty file": "File",
  "symbolic link": "SymbolicLink",
};

/**
 * The rules explaining every line in which two listings differ, or undefined when one line is
 * explained by none. A listing is what a RUN step of the differential cases wrote of what it saw:
 * lines `PATH TYPE MODE OWNER[ SIZE LINKS]` (stat's `%n %F %a %u:%g %s %h`), and md5sums. Lines
 * may differ only in their mode, each as a rule's `explainsMode` allows.
 */
function explainListing(
  ours: string,
  theirs: string,
  dockerfile: string,
  dockerignore: string,
): KeptDifference[] | undefined {
  const rules = new Set<KeptDifference>();
  const mine = ours.split("\n");
  const known = new Set(mine);
  // Directories only BuildKit's step saw, each explained on its own; then line by line.
  const others = theirs.split("\n").filter((line) => {
    const dir = /^\/(\S+) directory [0-7]+ \d+:\d+$/.exec(line)?.[1];
    if (dir === undefined || known.has(line)) return true;
    const rule = KEPT.find((k) => k.explainsExtraDirectory?.(dir, dockerignore));
    if (rule) rules.add(rule);
    return rule === undefined;
  });
  const closed = closedDirectories(mine, others, dockerfile);
  const below = (line: string) =>
    closed.some((d) => line.startsWith(`${d}/`) || line.includes(` ${d}/`) || line.includes(`'${d}/`));
  const visible = others.filter((line) => !below(line));
  if (mine.length !== visible.length) return undefined;
  for (const [i, line] of mine.entries()) {
    if (line === visible[i]) continue;
    const rule = explainListedLine(line, visible[i]!, dockerfile);
    if (rule === undefined) return undefined;
    rules.add(rule);
  }
  return [...rules];
}

/**
 * The directories of tbuild's listing whose mode a kept rule explains and that it closes to other
 * users (no read or search bit for them), and below which tbuild's listing has nothing: a RUN step
 * as another user could not list what is below them, which BuildKit's listing shows (names, and
 * md5sum's errors naming them).
 */
function closedDirectories(mine: string[], others: string[], dockerfile: string): string[] {
  const theirs = new Set(others);
  return mine.flatMap((line) => {
    const dir = /^(\S+) directory ([0-7]+) \d+:\d+$/.exec(line);
    if (dir === null || (Number.parseInt(dir[2]!, 8) & 0o005) === 0o005) return [];
    const other = others.find((o) => o.startsWith(`${dir[1]} directory `));
    if (other === undefined || theirs.has(line) || !explainListedLine(line, other, dockerfile)) return [];
    if (mine.some((l) => l.startsWith(`${dir[1]}/`))) return []; // tbuild's step could list it
    return [dir[1]!];
  });
}

/** The rule explaining two lines of listings (`%n %F %a %u:%g[ %s %h]`) of the same path, if one does. */
function explainListedLine(ours: string, theirs: string, dockerfile: string): KeptDifference | undefined {
  const statLine = /^(\S+) (.+?) ([0-7]+) (\d+:\d+)(?: (\d+) (\d+))?$/;
  const [a, b] = [statLine.exec(ours), statLine.exec(theirs)];
  if (a === null || b === null || a[1] !== b[1] || a[2] !== b[2] || a[5] !== b[5]) return undefined;
  const differing = [3, 4, 6].filter((i) => a[i] !== b[i]);
  if (differing.length !== 1) return undefined;
  if (differing[0] === 3) {
    const type = LISTED_TYPES[a[2]!] ?? a[2]!;
    const [modeOfOurs, modeOfTheirs] = [Number.parseInt(a[3]!, 8), Number.parseInt(b[3]!, 8)];
    return KEPT.find((k) => k.explainsMode?.(type, modeOfOurs, modeOfTheirs, dockerfile));
  }
  if (differing[0] === 4) return KEPT.find((k) => k.explainsOwner?.(a[4]!, b[4]!, dockerfile));
  const [linksOfOurs, linksOfTheirs] = [Number(a[6]), Number(b[6])];
  return KEPT.find((k) => k.explainsLinkCount?.(a[1]!, linksOfOurs, linksOfTheirs, dockerfile));
}

/**
 * Whether `--chown=chown` gives the owner "uid:gid": ids, or the names busybox's accounts have
 * (root, nobody); a user alone gives its group too.
 */
function chownGives(chown: string, owner: string): boolean {
  const idOf = (name: string) =>
    /^\d+$/.test(name) ? name : ({ root: "0", nobody: "65534" } as const)[name];
  const [user, group = user] = chown.split(":");
  return `${idOf(user!)}:${idOf(group)}` === owner;
}

/** The kept rule that explains tbuild failing with `error` where BuildKit 0.8 builds, if one does. */
export function explainingTbuildFailure(error: string, dockerignore: string): KeptDifference | undefined {
  return KEPT.find((k) => k.explainsTbuildFailure?.(error, dockerignore));
}

/**
 * The kept rules that explain a difference of a case built from `dockerfile` and a context with
 * `dockerignore`: one whose `explains`, `explainsExtraDirectory`, `explainsOwner` or `explainsMode` does, or, for
 * a file whose content alone differs, those that explain each line of it as a listing
 * (explainListing). Empty: the difference is not kept.
 */
export function explainedBy(d: Difference, dockerfile: string, dockerignore = ""): KeptDifference[] {
  const rule = KEPT.find((k) => k.explains?.(d, dockerfile));
  if (rule) return [rule];
  const extra = d.kind === "path" && d.ours === undefined ? (d.theirs as RootfsEntry) : undefined;
  if (extra?.type === "Directory") {
    const byPath = KEPT.find((k) => k.explainsExtraDirectory?.(d.key.slice(1), dockerignore));
    return byPath ? [byPath] : [];
  }
  const pair = entries(d);
  if (pair === undefined) return [];
  const [ours, theirs] = pair;
  if (onlyDiffer(ours, theirs, "owner")) {
    const byOwner = KEPT.find((k) => k.explainsOwner?.(ours.owner, theirs.owner, dockerfile));
    return byOwner ? [byOwner] : [];
  }
  if (onlyDiffer(ours, theirs, "mode")) {
    const [a, b] = [Number.parseInt(ours.mode, 8), Number.parseInt(theirs.mode, 8)];
    const byMode = KEPT.find((k) => k.explainsMode?.(ours.type, a, b, dockerfile));
    return byMode ? [byMode] : [];
  }
  if (onlyDiffer(ours, theirs, "sha256") && ours.small !== undefined && theirs.small !== undefined)
    return explainListing(ours.small, theirs.small, dockerfile, dockerignore) ?? [];
  return [];
}

/** The --chmod modes of the Dockerfile's COPY and ADD instructions. */
function chmodModes(dockerfile: string): number[] {
  return [...flagValues(dockerfile, "COPY", "chmod"), ...flagValues(dockerfile, "ADD", "chmod")].map((m) =>
    Number.parseInt(m, 8),
  );
}

/** The targets of the Dockerfile's bind mounts of the context (`--mount=type=bind` without `from=`). */
function contextBindTargets(dockerfile: string): string[] {
  const targets: string[] = [];
  for (const match of dockerfile.matchAll(/--mount=(\S+)/g)) {
    const options = new Map(match[1]!.split(",").map((o) => o.split("=", 2) as [string, string]));
    if ((options.get("type") ?? "bind") !== "bind" || options.has("from")) continue;
    const target = options.get("target") ?? options.get("dst") ?? options.get("destination");
    if (target !== undefined) targets.push(target.replace(/(.)\/$/, "$1"));
  }
  return targets;
}

/**
 * The plain names (no wildcards) .dockerignore excludes that an exception (`!name/...`) reaches
 * into: the directories a walk enters though it excludes them.
 */
function excludedWithExceptions(dockerignore: string): string[] {
  const lines = dockerignore.split("\n").map((line) => line.trim());
  const exceptions = lines.filter((line) => line.startsWith("!")).map((line) => line.slice(1));
  return lines.filter(
    (line) => /^[A-Za-z0-9._-]+$/.test(line) && exceptions.some((e) => e.startsWith(`${line}/`)),
  );
}

/** The special bits (setuid, setgid, sticky) of a mode. */
const SPECIAL_BITS = 0o7000;

/** A RUN history entry's build args (`|2 a=1 b=2`, none when absent) and the command after them. */
function runArgs(entry: string): { args: string[]; command: string } | undefined {
  const match = /^RUN (?:\|(\d+) )?(.*)$/.exec(entry);
  if (match === null) return undefined;
  const words = match[2]!.split(" ");
  const count = Number(match[1] ?? 0);
  return { args: words.slice(0, count), command: words.slice(count).join(" ") };
}

/** Both sides of a history entry difference, as strings. */
function history(d: Difference): [string, string] | undefined {
  if (d.kind !== "history" || typeof d.ours !== "string" || typeof d.theirs !== "string") return undefined;
  return [d.ours, d.theirs];
}

export const KEPT: KeptDifference[] = [
  {
    id: "history-copy-flags",
    buildkit: "the history entry of `COPY --chown=U:G --chmod=M src dest` reads `COPY src dest`",
    tbuild: "it reads `COPY --chown=U:G --chmod=M src dest`",
    why: "later BuildKit writes the flags (dockerfile2llb/convert_copy.go, dispatchCopy's commit message)",
    explains(d) {
      const pair = history(d);
      if (!pair || !/^(COPY|ADD) /.test(pair[0])) return false;
      const stripped = pair[0].replace(/ --(chown|chmod)=\S+/g, "");
      return stripped !== pair[0] && stripped === pair[1];
    },
  },
  {
    id: "history-arg-values",
    buildkit: "`ARG name` without a default, given by `--build-arg name=value`, is recorded as `ARG name`",
    tbuild: "it is recorded as `ARG name=value`",
    why: "later BuildKit records the value the build used (dockerfile2llb/convert.go, dispatchArg)",
    explains(d) {
      const pair = history(d);
      if (pair === undefined) return false;
      if (!pair[0].startsWith("ARG ") || !pair[1].startsWith("ARG ")) return false;
      const [mine, theirs] = pair.map((entry) =>
        entry
          .replace(/ \(empty layer\)$/, "")
          .split(" ")
          .slice(1),
      );
      return (
        mine!.length === theirs!.length &&
        mine!.every(
          (word, i) =>
            word === theirs![i] || (!theirs![i]!.includes("=") && word.startsWith(`${theirs![i]}=`)),
        )
      );
    },
  },
  {
    id: "history-expose-format",
    buildkit: "`EXPOSE 80 53/udp` is recorded as `EXPOSE map[53/udp:{} 80/tcp:{}]`",
    tbuild: "it is recorded as `EXPOSE [80/tcp 53/udp]`",
    why: "later BuildKit prints the list of ports (dockerfile2llb/convert_expose.go)",
    explains(d) {
      const pair = history(d);
      const match = pair && /^EXPOSE map\[(.*)\]( \(empty layer\))?$/.exec(pair[1]);
      if (!pair || !match) return false;
      const ports = match[1]!.split(" ").map((p) => p.replace(/:\{\}$/, ""));
      const mine = /^EXPOSE \[(.*)\]( \(empty layer\))?$/.exec(pair[0]);
      return (
        mine !== null &&
        [...mine[1]!.split(" ")].sort().join(" ") === ports.sort().join(" ") &&
        mine[2] === match[2]
      );
    },
  },
  {
    id: "history-run-args-once",
    buildkit: "a RUN after an ARG declared twice lists it twice: `RUN |3 foo=bar2 bar=123 foo=bar2 ...`",
    tbuild: "each ARG once, with the value the RUN sees: `RUN |2 foo=bar2 bar=123 ...`",
    why: "later BuildKit lists each once (moby/buildkit's testExportedHistoryFlattenArgs)",
    explains(d) {
      const pair = history(d);
      const match = pair && /^RUN \|(\d+) (.*)$/.exec(pair[1]);
      if (!pair || !match) return false;
      const words = match[2]!.split(" ");
      const count = Number(match[1]);
      const values = new Map<string, string>();
      for (const word of words.slice(0, count)) {
        const eq = word.indexOf("=");
        values.set(word.slice(0, eq), word.slice(eq + 1));
      }
      if (values.size === count) return false;
      const once = [...values].map(([k, v]) => `${k}=${v}`);
      return pair[0] === `RUN |${values.size} ${[...once, ...words.slice(count)].join(" ")}`;
    },
  },
  {
    id: "build-args-from-base-stage",
    buildkit:
      "a stage built FROM another stage does not see the ARGs that stage declared: its RUN is recorded `RUN /bin/sh -c ...`, without A in its environment",
    tbuild: "it sees them, as the stage it is built from did: `RUN |1 A=y /bin/sh -c ...`",
    why: "later BuildKit starts a stage's build args with those of the stage it is built from (dockerfile2llb/convert.go, 'Initialize build args from stage base', 2024)",
    foundByRandomCases: true,
    explains(d, dockerfile) {
      const pair = history(d);
      if (pair === undefined) return false;
      const [mine, theirs] = pair.map(runArgs);
      if (mine === undefined || theirs === undefined || mine.command !== theirs.command) return false;
      const declared = new Set([...dockerfile.matchAll(/^ARG (\S+)$/gm)].map((m) => m[1]!));
      const extra = mine.args.filter((arg) => !theirs.args.includes(arg));
      return (
        extra.length > 0 &&
        theirs.args.every((arg) => mine.args.includes(arg)) &&
        extra.every((arg) => declared.has(arg) || declared.has(arg.split("=")[0]!))
      );
    },
  },
  {
    id: "add-chown-archive",
    buildkit: "`ADD --chown=U:G archive.tar dest/` leaves the unpacked files owned as in the archive",
    tbuild: "they are owned by U:G",
    why: "later BuildKit applies --chown to an unpacked archive (moby/buildkit's testDockerfileAddChownArchive)",
    explainsOwner: (ours, _theirs, dockerfile) =>
      flagValues(dockerfile, "ADD", "chown").some((chown) => chownGives(chown, ours)),
  },
  {
    id: "copy-chmod-created-dir",
    buildkit:
      "`COPY --chmod=M dir /new` (or ADD) makes the new directory /new 0755 (the files in it get M), as a later RUN listing it sees; a RUN as another user can list what is below it where M would not let it",
    tbuild: "/new gets M too",
    why: "later BuildKit makes the directories a copy creates with the --chmod mode (fsutil's copy: MkdirAll with the mode; moby/buildkit's testCopyChmod checks the parents it creates)",
    explainsMode: (type, ours, theirs, dockerfile) =>
      type === "Directory" && theirs === 0o755 && chmodModes(dockerfile).includes(ours),
  },
  {
    id: "copy-chmod-special-bits",
    buildkit:
      "`COPY --chmod=M` (or ADD) of a setuid, setgid or sticky file keeps those bits: a 4755 file with --chmod=0600 becomes 4600",
    tbuild: "it becomes M exactly (0600): the special bits are those M has",
    why: "later BuildKit sets the mode --chmod gives, special bits only from it (fsutil's copy/copy_linux.go, copyFileInfo)",
    foundByRandomCases: true,
    explainsMode: (_type, ours, theirs, dockerfile) =>
      chmodModes(dockerfile).includes(ours) &&
      (ours & SPECIAL_BITS) === 0 &&
      (theirs & SPECIAL_BITS) !== 0 &&
      (theirs & ~SPECIAL_BITS) === ours,
  },
  {
    id: "bind-context-link-count",
    buildkit:
      "a file of the context bind-mounted by `RUN --mount=type=bind,source=a.txt,target=/m` has as many links as names it has among the context paths the whole Dockerfile reads (2, with `COPY . /` and a hard link `hard` of a.txt)",
    tbuild: "it has as many as it has among the paths the mount selects (1)",
    why: "the mount's cache key covers only what it selects (in BuildKit too), so what a RUN sees must not depend on other steps: a cached step would show what the build that made it saw",
    everyBuildKit: true,
    foundByRandomCases: true,
    explainsLinkCount: (path, ours, theirs, dockerfile) =>
      ours < theirs && contextBindTargets(dockerfile).some((t) => path === t || path.startsWith(`${t}/`)),
  },
  {
    id: "dockerignore-excluded-dir-sent",
    buildkit:
      "a directory .dockerignore excludes (`logs`) with an exception below it (`!logs/keep.log`) that matches nothing is in the context as an empty directory: `COPY . /app/` makes /app/logs, `COPY logs /dst/` copies nothing",
    tbuild: "it is not in the context, as nothing in it is: `COPY logs /dst/` fails, logs: not found",
    why: "later BuildKit's context transfer sends an excluded directory only once something in it is included (fsutil's filter.go, its parentDirs)",
    foundByRandomCases: true,
    explainsExtraDirectory: (path, dockerignore) =>
      excludedWithExceptions(dockerignore).some((dir) => path === dir || path.endsWith(`/${dir}`)),
    // `COPY logs /dst/`: later BuildKit has no logs to copy either.
    explainsTbuildFailure(error, dockerignore) {
      const missing = /\/(\S+): not found/.exec(error)?.[1];
      return missing !== undefined && excludedWithExceptions(dockerignore).includes(missing);
    },
  },
  {
    id: "xattrs-not-kept",
    buildkit:
      "a file's extended attributes (`user.*`, `security.capability` as `setcap` sets it) travel: from the context through COPY and ADD, and from what a RUN step made, into the layer",
    tbuild:
      "they are left behind: the file arrives without them, and the build warns (extended attributes left out of the build context, or of a step's layer)",
    why: "not supported yet: Node has no system calls for extended attributes; `@napi-rs/xattr` lets tbuild see them, not yet keep them (a base image's layers keep theirs, and `-o type=tar` writes them)",
    everyBuildKit: true,
    notSupportedYet: true,
    explains(d) {
      const pair = entries(d);
      return pair !== undefined && pair[0].xattrs === undefined && onlyDiffer(pair[0], pair[1], "xattrs");
    },
  },
  {
    id: "invalid-json-is-shell-form",
    buildkit: "`ENTRYPOINT []random string` is read as an empty exec form: no entrypoint",
    tbuild: "text that is not a JSON array is the shell form: `/bin/sh -c '[]random string'`",
    why: "a BuildKit 0.8 parser bug; later BuildKit reads it as the shell form (moby/buildkit's testInvalidJSONCommands)",
    explains(d) {
      if (d.kind === "config") {
        const mine = d.ours as string[] | undefined;
        return (
          (d.key === "config Entrypoint" || d.key === "config Cmd") &&
          d.theirs === undefined &&
          mine?.length === 3 &&
          mine[0] === "/bin/sh" &&
          mine[1] === "-c" &&
          mine[2]!.startsWith("[")
        );
      }
      const pair = history(d);
      return (
        pair !== undefined &&
        /^(ENTRYPOINT|CMD) \[\] \(empty layer\)$/.test(pair[1]) &&
        pair[0].startsWith(`${pair[1].split(" ")[0]} ["/bin/sh" "-c" "[`)
      );
    },
  },
  {
    id: "user-supplementary-groups",
    buildkit: "a RUN as root has no supplementary groups from /etc/group (`id` shows `groups=0(root)` only)",
    tbuild: "the user's groups from /etc/group are its supplementary groups (`groups=0(root),10(wheel)`)",
    why: "later BuildKit sets them, as containerd does (moby/buildkit's testUserAdditionalGids)",
    buildKitFails: { cases: ["core/user-additional-gids"], error: /executor failed running .*\$\(id\)/ },
  },
  {
    id: "onbuild-copy-from-inherited",
    buildkit:
      "an ONBUILD COPY --from=stage, run in a stage built FROM the one that declared it, fails: it looks in the wrong stage",
    tbuild: "it copies from the named stage",
    why: "a BuildKit 0.8 bug, fixed later (moby/buildkit's testOnBuildInheritedStageWithFrom)",
    buildKitFails: {
      cases: ["onbuild/inherited-stage-with-from"],
      error: /failed to (walk|compute cache key)/,
    },
  },
];
