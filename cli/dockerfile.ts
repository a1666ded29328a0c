import { readFile } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../errors/index.js";

export interface DockerfileInput {
  contextDir: string;
  dockerfilePath: string;
  /** How errors name the Dockerfile: relative to where the user is, unless it lies outside. */
  displayName: string;
  source: Buffer;
}

/** The build context and Dockerfile a command names: `-f FILE` or `CONTEXT/Dockerfile`. */
export async function readDockerfileInput(
  cwd: string,
  contextArg: string,
  fileFlag: string | undefined,
): Promise<DockerfileInput> {
  const contextDir = path.resolve(cwd, contextArg);
  const dockerfilePath = path.resolve(cwd, fileFlag ?? path.join(contextArg, "Dockerfile"));
  const source = await readFile(dockerfilePath).catch((err: NodeJS.ErrnoException) => {
    throw new TbuildError(
      "E_NO_DOCKERFILE",
      `cannot read the Dockerfile ${dockerfilePath}: ${err.code ?? err.message}`,
    );
  });
  const relative = path.relative(cwd, dockerfilePath);
  const displayName = relative && !relative.startsWith("..") ? relative : dockerfilePath;
  return { contextDir, dockerfilePath, displayName, source };
}
