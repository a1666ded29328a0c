/**
 * The registry client (distribution spec): endpoints and mirrors from config, authorization
 * (Basic, Bearer tokens), docker's credential files and helpers, and the pull and push of images
 * between a registry and the local store.
 */
export { Authorizer, type CredentialsProvider } from "./auth.js";
export { BlobSources } from "./blob-sources.js";
export { type Challenge, parseChallenges } from "./challenge.js";
export { type FetchedManifest, MANIFEST_ACCEPT, RegistryClient } from "./client.js";
export {
  type Credentials,
  dockerConfigPath,
  eraseCredentials,
  getCredentials,
  normalizeRegistryName,
  serverAddress,
  storeCredentials,
} from "./credentials.js";
export {
  BlobNotFoundError as RegistryBlobNotFoundError,
  ConnectionRefusedError,
  CredentialsError,
  ImageNotFoundError as RegistryImageNotFoundError,
  LoginFailedError,
  ManifestDigestMismatchError,
  RegistryError,
  RegistryNetworkError,
  RegistryNotSupportedError,
  RegistryResponseError,
  RegistryTlsError,
  UnauthorizedError,
} from "./errors.js";
export {
  DOCKER_HUB,
  isLoopbackHost,
  pullEndpoints,
  type RegistryEndpoint,
  type RegistryHostConfig,
  type RegistryHostsConfig,
  registryEndpoint,
} from "./hosts.js";
export { verifyLogin } from "./login.js";
export { type PullOptions, type PullResult, pullImage } from "./pull.js";
export { type PushOptions, type PushResult, pushImage } from "./push.js";
export { defaultRetryPolicy, type RetryPolicy } from "./retry.js";
export { type RegistryOptions, RegistrySession } from "./session.js";
export { HttpTransport } from "./transport.js";
