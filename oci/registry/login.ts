/**
 * `tbuild login`'s check: the credentials are tried against the registry (a token for the
 * service, or `/v2/` with Basic) before anything is saved, as `docker login` does.
 */
import type { Credentials } from "./credentials.js";
import { LoginFailedError, UnauthorizedError } from "./errors.js";
import { registryEndpoint } from "./hosts.js";
import { type RegistryOptions, RegistrySession } from "./session.js";

export async function verifyLogin(
  registry: string,
  credentials: Credentials,
  options: Omit<RegistryOptions, "credentials"> = {},
): Promise<void> {
  const session = new RegistrySession([registryEndpoint(registry, options.hosts)], {
    ...options,
    credentials: async () => credentials,
  });
  try {
    await session.clients[0]!.verifyCredentials();
  } catch (err) {
    if (err instanceof UnauthorizedError) {
      throw new LoginFailedError(registry, "the registry refused the user name or password");
    }
    throw err;
  } finally {
    session.close();
  }
}
