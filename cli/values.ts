import { UsageError } from "../errors/index.js";

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
