/**
 * COPY and ADD: a `file` vertex of copy actions (or, with `--link`, a layer of its own merged
 * over the root), from the context, a stage, an image, a URL, a git repository or heredocs, with
 * BuildKit's copy semantics and history text.
 */
import path from "node:path/posix";
import { cleanAbsolutePath } from "../../oci/clean-path.js";
import type { FileAction } from "../../solver/graph.js";
import type { CopyInstruction } from "../instructions/index.js";
import type { EnvLookup } from "../shell/index.js";
import type { Heredoc, Position } from "../syntax/index.js";
import { type PendingVertex, pending } from "./pending.js";
import {
  absolutePath,
  commit,
  type DispatchContext,
  displayText,
  expandWord,
  locationOf,
  parseChown,
  type StageState,
  sourceFor,
  stepName,
} from "./state.js";

const GIT_SOURCE = /^(?:git@[^:]+:|git:\/\/|https?:\/\/[^#]+\.git(?:#|$)|ssh:\/\/)/;

export async function dispatchCopy(st: StageState, ins: CopyInstruction, ctx: DispatchContext) {
  const at = ins.range.start;
  const isAdd = ins.kind === "add";
  const keyword = isAdd ? "ADD" : "COPY";
  const dest = absolutePath(st, expandWord(st, ctx, ins.dest, at));
  const chown = ins.chown !== undefined ? expandWord(st, ctx, ins.chown, at) : undefined;
  const chmod = ins.chmod !== undefined ? expandWord(st, ctx, ins.chmod, at) : undefined;
  if (
    chmod !== undefined &&
    // Octal as BuildKit reads it: 0 to 7777, so `--chmod=0` gives mode 0000.
    !/^[0-7]{1,4}$/.test(chmod) &&
    !/^([ugoa]*[-+=][rwxXst]*)(,[ugoa]*[-+=][rwxXst]*)*$/.test(chmod)
  ) {
    throw ctx.errorAt(
      `invalid --chmod=${chmod}: use an octal mode such as 755 or a symbolic one such as u+x`,
      at,
    );
  }
  const exclude = ins.exclude.map((e) => expandWord(st, ctx, e, at));
  const checksum = ins.checksum !== undefined ? expandWord(st, ctx, ins.checksum, at) : undefined;

  // Path sources first, then heredoc files, in the order BuildKit copies them.
  const sources: ({ path: string; heredoc?: undefined } | { heredoc: Heredoc; path?: undefined })[] = [
    ...ins.sources.map((s) => ({ path: expandWord(st, ctx, s, at) })),
    ...ins.heredocs.map((heredoc) => ({ heredoc })),
  ];
  if (sources.length > 1 && !dest.endsWith("/")) {
    throw ctx.errorAt(
      `When using ${keyword} with more than one source file, the destination must be a directory and end with a /`,
      at,
    );
  }
  if (checksum !== undefined) {
    const only = sources[0];
    if (sources.length !== 1 || only?.path === undefined || !/^https?:\/\//.test(only.path)) {
      throw ctx.errorAt("--checksum can only be used with a single http(s) source", at);
    }
  }

  const inputs: PendingVertex[] = [];
  const addInput = (v: PendingVertex) => {
    const known = inputs.indexOf(v);
    if (known >= 0) return known;
    inputs.push(v);
    return inputs.length - 1;
  };
  const link = ins.link && chmod === undefined;
  if (st.root && !link) addInput(st.root);
  const source = await sourceFor(st, ctx, ins.from, at);
  const owner = chown !== undefined ? parseChown(chown) : undefined;
  const actions: FileAction[] = [];
  const copy = (
    input: number | undefined,
    src: string,
    extra: Partial<Extract<FileAction, { action: "copy" }>> = {},
  ) => {
    if (input === undefined) {
      throw ctx.errorAt(
        `${keyword} --from=${ins.from}: that stage's filesystem is empty, there is nothing to copy`,
        at,
      );
    }
    actions.push({
      action: "copy",
      input,
      src,
      dest,
      ...(owner ? { chown: owner } : {}),
      ...(chmod !== undefined ? { chmod } : {}),
      followSymlinks: true,
      copyDirContentsOnly: true,
      attemptUnpack: isAdd && ins.unpack !== false,
      createDestPath: true,
      allowWildcard: true,
      allowEmptyWildcard: true,
      includePatterns: [],
      excludePatterns: exclude,
      ...extra,
    });
  };
  const historySources: string[] = [];
  for (const s of sources) {
    if (s.heredoc) {
      const h = s.heredoc;
      historySources.push(`<<${h.name}`);
      const data = h.expand ? expandHeredoc(ctx, h.content, st.env, at) : h.content;
      const file = pending(
        {
          kind: "file",
          actions: [{ action: "mkfile", path: `/${h.name}`, data, mode: 0o644 }],
          platform: st.platform,
        },
        [],
        { name: "preparing inline document", internal: true },
      );
      copy(addInput(file), `/${h.name}`, {
        followSymlinks: false,
        copyDirContentsOnly: false,
        attemptUnpack: false,
        allowWildcard: false,
        allowEmptyWildcard: false,
      });
      continue;
    }
    const src = s.path;
    historySources.push(src);
    if (/^https?:\/\//.test(src) && !GIT_SOURCE.test(src)) {
      if (!isAdd) throw ctx.errorAt(`source can't be a URL for COPY: ${src} (use ADD)`, at);
      const filename = urlFilename(src);
      const http = pending({ kind: "http", url: src, filename, ...(checksum ? { checksum } : {}) }, [], {
        name: `[internal] download ${src}`,
        internal: true,
      });
      copy(addInput(http), `/${filename}`, {
        // A download is kept as it is, unless ADD --unpack=true asks for it to be extracted.
        attemptUnpack: ins.unpack === true,
        allowWildcard: false,
        allowEmptyWildcard: false,
      });
      continue;
    }
    if (GIT_SOURCE.test(src)) {
      if (!isAdd) throw ctx.errorAt(`source can't be a git repository for COPY: ${src} (use ADD)`, at);
      const [remote, fragment] = src.split("#", 2) as [string, string | undefined];
      const [ref, subdir] = (fragment ?? "").split(":", 2);
      const git = pending(
        {
          kind: "git",
          remote,
          ...(ref ? { ref } : {}),
          ...(subdir ? { subdir } : {}),
          keepGitDir: ins.keepGitDir === true,
        },
        [],
        { name: `[internal] git ${remote}`, internal: true },
      );
      copy(addInput(git), "/", { attemptUnpack: false });
      continue;
    }
    let from = src;
    let include: string[] = [];
    if (ins.parents) {
      const pivot = src.indexOf("/./");
      include = [path.normalize(`/${pivot >= 0 ? src.slice(pivot + 3) : src}`).replace(/^\//, "")];
      from = pivot >= 0 ? src.slice(0, pivot) : "/";
    }
    const selector = cleanAbsolutePath(from);
    if (source.fromContext) ctx.contextPaths.add(cleanAbsolutePath(src.replace("/./", "/")));
    // As BuildKit: a --parents source without wildcards must exist; one with them may match nothing.
    const required =
      ins.parents && !/[*?[]/.test(src) ? { requiredPaths: [path.join(selector, include[0]!)] } : {};
    copy(source.vertex ? addInput(source.vertex) : undefined, selector, {
      includePatterns: include,
      ...required,
    });
  }

  const filePlatform = st.platform;
  const name = stepName(st, ctx, displayText(ins));
  const location = locationOf(ctx, ins.node);
  if (link) {
    const layer = pending({ kind: "file", actions, platform: filePlatform }, inputs, { name, location });
    st.root = st.root
      ? pending({ kind: "merge" }, [st.root, layer], { name: `${name} (link)`, location })
      : layer;
  } else {
    st.root = pending(
      { kind: "file", ...(st.root ? { base: 0 } : {}), actions, platform: filePlatform },
      inputs,
      { name, location },
    );
  }
  const flags = [
    ...(ins.parents ? ["--parents"] : []),
    ...(chown !== undefined ? [`--chown=${chown}`] : []),
    ...(chmod !== undefined ? [`--chmod=${chmod}`] : []),
  ];
  commit(st, [keyword, ...flags, ...historySources, expandWord(st, ctx, ins.dest, at)].join(" "), true, true);
}

/** A heredoc file's body is expanded, but its quotes belong to the file: they are not processed. */
function expandHeredoc(ctx: DispatchContext, body: string, env: EnvLookup, at: Position): string {
  return ctx.expand(body, env, at, ctx.heredocLexer).result;
}

function urlFilename(url: string): string {
  try {
    const base = path.basename(new URL(url).pathname);
    return base && base !== "/" && base !== "." ? base : "__unnamed__";
  } catch {
    return "__unnamed__";
  }
}
