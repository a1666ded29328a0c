import { readFile } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../errors/index.js";
import type { BuildRequest } from "./request.js";

export interface DockerfileInput {
  contextDir: string;
  dockerfilePath: string;
  /** How errors name the Dockerfile: relative to where the user is, unless it lies outside. */
  displayName: string;
  source: Buffer;
}

/**
 * The build context and Dockerfile a command names: `-f FILE` or `CONTEXT/Dockerfile`. A file
 * named `Dockerfile` that does not exist falls back to a lowercase `dockerfile` beside it, as
 * BuildKit does (moby/moby#10858).
 */
export async function readDockerfileInput(
  cwd: string,
  contextArg: string,
  fileFlag: string | undefined,
): Promise<DockerfileInput> {
  const contextDir = path.resolve(cwd, contextArg);
  const named = path.resolve(cwd, fileFlag ?? path.join(contextArg, "Dockerfile"));
  let dockerfilePath = named;
  const source = await readFile(named).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" && path.basename(named) === "Dockerfile") {
      const lowercase = path.join(path.dirname(named), "dockerfile");
      const found = await readFile(lowercase).catch(() => undefined);
      if (found) {
        dockerfilePath = lowercase;
        return found;
      }
    }
    throw new TbuildError(
      "E_NO_DOCKERFILE",
      `cannot read the Dockerfile ${named}: ${err.code ?? err.message}`,
    );
  });
  const relative = path.relative(cwd, dockerfilePath);
  const displayName = relative && !relative.startsWith("..") ? relative : dockerfilePath;
  return { contextDir, dockerfilePath, displayName, source };
}

/** Reads the request's Dockerfile: `dockerfile`, or `CONTEXT/Dockerfile`. */
export function readRequestDockerfile(request: BuildRequest, cwd: string): Promise<DockerfileInput> {
  return readDockerfileInput(cwd, request.context, request.dockerfile);
}
