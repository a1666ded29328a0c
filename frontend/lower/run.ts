/**
 * RUN: an `exec` vertex over the stage's root, with its mounts (bind, cache, tmpfs, secret, ssh)
 * and heredocs, as BuildKit's dispatchRun makes it; its history names the build arguments in
 * scope as BuildKit's does.
 */
import { cleanAbsolutePath } from "../../oci/clean-path.js";
import type { ExecMount } from "../../solver/graph.js";
import type { RunInstruction } from "../instructions/index.js";
import { withShell } from "./config.js";
import { type PendingVertex, pending } from "./pending.js";
import type { DispatchContext, StageState } from "./state.js";
import { absolutePath, commit, displayText, expandWord, locationOf, sourceFor, stepName } from "./state.js";

/** The step's environment as the stage set it; a PATH it lacks is added when it runs (worker/sandbox/spec.ts). */
function execEnv(st: StageState): string[] {
  return [...st.env].map(([k, v]) => `${k}=${v}`);
}

const HEREDOC_MARKER = /^<<(-?)(["']?)([^"'\s]+)\2$/;

export async function dispatchRun(st: StageState, ins: RunInstruction, ctx: DispatchContext) {
  const at = ins.range.start;
  const inputs: PendingVertex[] = st.root ? [st.root] : [];
  const addInput = (v: PendingVertex) => {
    const known = inputs.indexOf(v);
    if (known >= 0) return known;
    inputs.push(v);
    return inputs.length - 1;
  };
  const mounts: ExecMount[] = [
    { type: "bind", target: "/", ...(st.root ? { input: 0 } : {}), readonly: false, output: true },
  ];

  let args: string[];
  let summary = "";
  if (ins.command.form === "exec") {
    args = ins.command.argv;
  } else if (ins.heredocs.length > 0) {
    const command = ins.command.command.trim();
    const first = ins.heredocs[0]!;
    if (HEREDOC_MARKER.test(command)) {
      summary = ` (${summarizeHeredoc(first.content)})`;
      if (first.content.startsWith("#!")) {
        // A script with a shebang runs as a file, by its own interpreter.
        const script = pending(
          {
            kind: "file",
            actions: [{ action: "mkfile", path: `/${first.name}`, data: first.content, mode: 0o755 }],
            platform: st.platform,
          },
          [],
          { name: "preparing inline document", internal: true },
        );
        mounts.push({
          type: "bind",
          target: "/dev/pipes/",
          input: addInput(script),
          selector: "/",
          readonly: true,
          output: false,
        });
        args = withShell(st.image.config, `/dev/pipes/${first.name}`);
      } else {
        args = withShell(st.image.config, first.content);
      }
    } else {
      // Anything around the heredocs: hand the whole text to the shell, which knows heredocs.
      args = withShell(
        st.image.config,
        command + ins.heredocs.map((h) => `\n${h.content}${h.name}`).join(""),
      );
    }
  } else {
    args = withShell(st.image.config, ins.command.command);
  }

  for (const [index, raw] of ins.mounts.entries()) {
    const mountAt = ins.mountPositions[index] ?? at;
    const spec = ctx.parseMount(expandWord(st, ctx, raw, mountAt), {
      file: ctx.file,
      lines: ctx.lines,
      position: mountAt,
    });
    const target = absolutePath(st, spec.target ?? "").replace(/(.)\/$/, "$1");
    switch (spec.type) {
      case "bind": {
        const source = await sourceFor(st, ctx, spec.from, at);
        const selector = cleanAbsolutePath(spec.source ?? "/");
        // A bind mount of the context mounts a source of exactly what it selects, not the whole
        // context the build reads: what it shows (which names share a file, so link counts)
        // must not depend on what other steps copy, since its key does not.
        const vertex = source.fromContext ? contextSelection(ctx, selector) : source.vertex;
        mounts.push({
          type: "bind",
          target,
          ...(vertex ? { input: addInput(vertex) } : {}),
          selector,
          readonly: !spec.readwrite,
          output: false,
        });
        break;
      }
      case "cache": {
        const source = spec.from !== undefined ? await sourceFor(st, ctx, spec.from, at) : undefined;
        mounts.push({
          type: "cache",
          target,
          ...(source?.vertex
            ? { input: addInput(source.vertex), selector: cleanAbsolutePath(spec.source ?? "/") }
            : {}),
          readonly: spec.readonly,
          output: false,
          cache: { id: spec.id ?? target, sharing: spec.sharing },
          ...ids(spec),
        });
        break;
      }
      case "tmpfs":
        mounts.push({
          type: "tmpfs",
          target,
          readonly: false,
          output: false,
          tmpfs: spec.size !== undefined ? { size: spec.size } : {},
        });
        break;
      case "secret":
        mounts.push({
          type: "secret",
          target:
            spec.target !== undefined ? target : spec.env !== undefined ? "" : `/run/secrets/${spec.id}`,
          readonly: true,
          output: false,
          secret: {
            id: spec.id,
            ...(spec.env !== undefined ? { env: spec.env } : {}),
            required: spec.required,
          },
          ...ids(spec),
        });
        break;
      case "ssh":
        mounts.push({
          type: "ssh",
          target: spec.target !== undefined ? target : "/run/buildkit/ssh_agent.0",
          readonly: true,
          output: false,
          ssh: { id: spec.id, required: spec.required },
          ...ids(spec),
        });
        break;
    }
  }

  st.root = pending(
    {
      kind: "exec",
      args,
      env: execEnv(st),
      cwd: st.workdir,
      user: st.user,
      network: ins.network === undefined || ins.network === "default" ? ctx.network : ins.network,
      security: ins.security ?? "sandbox",
      ...(ctx.hostname !== undefined ? { hostname: ctx.hostname } : {}),
      mounts,
      platform: st.platform,
    },
    inputs,
    {
      name: stepName(st, ctx, runTitle(st, ctx, `${displayText(ins)}${summary}`, mounts)),
      location: locationOf(ctx, ins.node),
    },
  );
  // Each build argument once, where it was first declared, with its latest value (as BuildKit).
  const argValues = new Map<string, string>();
  for (const { key, value } of st.declaredArgs) argValues.set(key, st.env.get(key) ?? value ?? "");
  const argsInHistory = [...argValues].map(([key, value]) => `${key}=${value}`);
  const prefix = argsInHistory.length > 0 ? `|${argsInHistory.length} ${argsInHistory.join(" ")} ` : "";
  commit(st, `RUN ${prefix}${args.join(" ")}`, true, true);
}

/**
 * A RUN as progress names it, as BuildKit does: its variables expanded (unset ones and quotes
 * left as written), and a variable a secret mount sets shown as `****`, never its value.
 */
function runTitle(st: StageState, ctx: DispatchContext, text: string, mounts: ExecMount[]): string {
  const env = new Map(st.env);
  for (const mount of mounts) if (mount.secret?.env !== undefined) env.set(mount.secret.env, "****");
  try {
    return ctx.titleLexer.processWord(text, env);
  } catch {
    return text;
  }
}

/** A `local` source of the build context holding only `selector` (and what its symlinks lead to). */
function contextSelection(ctx: DispatchContext, selector: string): PendingVertex {
  const context = ctx.context.op;
  return pending(
    {
      kind: "local",
      name: "context",
      excludePatterns: context.kind === "local" ? context.excludePatterns : [],
      followPaths: selector === "/" ? [] : [selector],
    },
    [],
    { name: "[internal] load build context", internal: true },
  );
}

function ids(spec: { uid?: number; gid?: number; mode?: number }) {
  return {
    ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
    ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
    ...(spec.mode !== undefined ? { mode: spec.mode } : {}),
  };
}

function summarizeHeredoc(doc: string): string {
  const lines = doc.trim().split(/\r?\n/);
  return lines.length > 1 ? `${lines[0]}...` : lines[0]!;
}
