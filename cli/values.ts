import { UsageError } from "../errors/index.js";
import { formatReference, parseReference } from "../oci/reference.js";

/**
 * A name to give an image (`-t`, `tbuild tag`, `commit`, `import`), normalized. A digest names
 * content and cannot be given to an image: `a:b@sha256:…` is refused, as `docker tag` refuses it,
 * rather than stored under a name whose digest says something else.
 */
export function parseImageTag(text: string, where: string): string {
  const ref = parseReference(text);
  if (ref.digest !== undefined) {
    throw new UsageError(
      `${where} ${text}: a digest is not a tag (refusing to name an image with a digest reference); give NAME[:TAG] without "@${ref.digest}"`,
    );
  }
  return formatReference(ref);
}

/** `K=V` flag values into a record; `K` alone takes the value of the environment variable K, as docker does. */
export function parseKeyValues(
  values: string[],
  flag: string,
  env: NodeJS.ProcessEnv = process.env,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf("=");
    if (eq === 0) throw new UsageError(`${flag} "${value}": the name before "=" is empty`);
    if (eq < 0) {
      const fromEnv = env[value];
      if (fromEnv !== undefined) result[value] = fromEnv;
      continue;
    }
    result[value.slice(0, eq)] = value.slice(eq + 1);
  }
  return result;
}
