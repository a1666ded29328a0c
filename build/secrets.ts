/**
 * A build's secrets and SSH agents, from the request's ids to what the worker mounts: a readable
 * file or a set environment variable for each secret, a socket for each agent. Checked before any
 * step runs, so that a bad source is the user's to fix at once; buildx would fail only in the step
 * that mounts it (a directory), or mount an empty secret (an unset variable).
 */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { BuildGraph } from "../solver/graph.js";
import type { SecretSource } from "../worker/ops/context.js";
import type { SecretRequest, SshRequest } from "./request.js";

export async function resolveSecrets(
  requests: SecretRequest[],
  { env, cwd }: { env: NodeJS.ProcessEnv; cwd: string },
): Promise<Record<string, SecretSource>> {
  const secrets: Record<string, SecretSource> = {};
  for (const request of requests) {
    const { id } = request;
    if (!id) throw new UsageError(`--secret ${JSON.stringify(request)} has no id=`);
    if ("src" in request) {
      secrets[id] = { file: await checkSecretFile(id, path.resolve(cwd, request.src), request.src) };
    } else if (request.env !== undefined) {
      if (env[request.env] === undefined) {
        throw new TbuildError(
          "E_SECRET_SOURCE",
          `--secret id=${id}: the environment variable ${request.env} is not set: set it (${request.env}= for an empty secret), or give src=FILE`,
        );
      }
      secrets[id] = { env: request.env };
    } else if (env[id] !== undefined) secrets[id] = { env: id };
    else throw new UsageError(`--secret id=${id} names no src= file or env= variable, and $${id} is not set`);
  }
  return secrets;
}

/** The secret's file, if it is one tbuild can read; else an error naming the secret and the file. */
async function checkSecretFile(id: string, file: string, shown: string): Promise<string> {
  const problem = (what: string) =>
    new TbuildError("E_SECRET_SOURCE", `--secret id=${id}: src=${shown} ${what}`);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw code === "ENOENT" ? problem("does not exist") : problem(`cannot be read (${code})`);
  }
  if (info.isDirectory()) throw problem("is a directory: a secret is one file");
  try {
    await access(file, constants.R_OK);
  } catch (err) {
    throw problem(`cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
  return file;
}

/** `default` (or any id without a socket) forwards $SSH_AUTH_SOCK; else the given agent socket. */
export function resolveSshAgents(
  requests: SshRequest[],
  { env, cwd }: { env: NodeJS.ProcessEnv; cwd: string },
): Record<string, string> {
  const agents: Record<string, string> = {};
  for (const { id, socket } of requests) {
    const resolved = socket ?? env.SSH_AUTH_SOCK;
    if (!resolved) {
      throw new UsageError(`--ssh ${id}: no agent socket given and SSH_AUTH_SOCK is not set`);
    }
    agents[id] = path.resolve(cwd, resolved);
  }
  return agents;
}

/** A required secret the build was not given is an error before anything runs. */
export function checkRequiredSecrets(
  graph: BuildGraph,
  secrets: Record<string, SecretSource>,
  ssh: Record<string, string>,
): void {
  for (const [digest, vertex] of Object.entries(graph.vertices)) {
    if (vertex.op.kind !== "exec") continue;
    const where = graph.info[digest]?.location;
    const at = where ? `${where.file}:${where.startLine}: ` : "";
    for (const mount of vertex.op.mounts) {
      if (mount.secret?.required && secrets[mount.secret.id] === undefined) {
        throw new TbuildError(
          "E_MISSING_SECRET",
          `${at}RUN needs secret "${mount.secret.id}" (required=true), which this build was not given: pass --secret id=${mount.secret.id},src=PATH`,
        );
      }
      if (mount.ssh?.required && ssh[mount.ssh.id] === undefined) {
        const flag = mount.ssh.id === "default" ? "--ssh default" : `--ssh ${mount.ssh.id}=SOCKET`;
        throw new TbuildError(
          "E_MISSING_SECRET",
          `${at}RUN needs the ssh agent "${mount.ssh.id}" (required=true), which this build was not given: pass ${flag}`,
        );
      }
    }
  }
}
