/**
 * `tbuild build` flags → a BuildRequest, once: `build` runs it and `debug graph` plans it, so the
 * two read a command line the same way (`tbuild debug graph` takes every flag `build` takes).
 * Only flag syntax is checked here; what the values name (files, images, secrets) is the build's
 * to check.
 */
import type { BuildRequest, SecretRequest, SshRequest } from "../build/request.js";
import { UsageError } from "../errors/index.js";
import { parseOutputSpec } from "../exporters/request.js";
import { parseSourceDateEpoch } from "../oci/source-date-epoch.js";
import { parseDuration } from "../solver/gc.js";
import { parseAttestationFlags } from "./attestations.js";
import { parseBuildNetwork } from "./network.js";
import type { ParsedCommandLine } from "./spec.js";
import { parseImageTag, parseKeyValues } from "./values.js";

type Values = ParsedCommandLine["values"];
const list = (values: Values, name: string) => (values[name] as string[] | undefined) ?? [];
const text = (values: Values, name: string) => values[name] as string | undefined;

export async function parseBuildRequest(
  args: ParsedCommandLine,
  ctx: { env: NodeJS.ProcessEnv; cwd: string },
  command: string,
): Promise<BuildRequest> {
  const { values } = args;
  const [context, ...extra] = args.positionals;
  if (context === undefined || extra.length > 0) {
    throw new UsageError(`tbuild ${command} takes exactly one CONTEXT (a directory)`);
  }
  const buildArgs = parseKeyValues(list(values, "build-arg"), "--build-arg", ctx.env);
  // As buildx: the environment's SOURCE_DATE_EPOCH, unless a build arg gives it.
  const epoch = parseSourceDateEpoch(buildArgs.SOURCE_DATE_EPOCH ?? ctx.env.SOURCE_DATE_EPOCH);
  const tags = list(values, "tag");
  for (const tag of tags) parseImageTag(tag, "-t");
  const platform = text(values, "platform");
  const cacheToSpec = text(values, "cache-to");
  const cacheFromSpecs = list(values, "cache-from");
  // Loaded only for builds that import or export cache (it brings the registry client).
  const buildCache =
    cacheToSpec || cacheFromSpecs.length > 0 ? await import("../solver/build-cache.js") : undefined;
  const attestations = parseAttestationFlags({
    provenance: text(values, "provenance"),
    sbom: text(values, "sbom"),
    attest: list(values, "attest"),
  });
  const request: BuildRequest = {
    context,
    ...optional("dockerfile", text(values, "file")),
    ...(Object.keys(buildArgs).length > 0 ? { buildArgs } : {}),
    ...optional("target", text(values, "target")),
    ...(platform !== undefined ? { platforms: platform.split(",").filter((p) => p.trim() !== "") } : {}),
    ...nonEmpty("contexts", parseContextFlags(list(values, "build-context"))),
    ...nonEmpty("secrets", list(values, "secret").map(parseSecretFlag)),
    ...nonEmpty("ssh", list(values, "ssh").map(parseSshFlag)),
    ...nonEmpty(
      "outputs",
      list(values, "output").map((spec) => parseOutputSpec(spec)),
    ),
    ...nonEmpty(
      "cacheFrom",
      cacheFromSpecs.map((spec) => buildCache!.parseCacheImportSpec(spec, ctx.cwd)),
    ),
    ...(cacheToSpec ? { cacheTo: buildCache!.parseCacheExportSpec(cacheToSpec, ctx.cwd) } : {}),
    ...nonEmpty("labels", parseKeyValues(list(values, "label"), "--label", {})),
    ...(values.network !== undefined ? { network: parseBuildNetwork(text(values, "network")) } : {}),
    ...(values["no-cache"] === true ? { noCache: true } : {}),
    ...nonEmpty("noCacheFilter", list(values, "no-cache-filter")),
    ...(epoch !== undefined ? { epoch } : {}),
    ...optional("worker", text(values, "worker") ?? (ctx.env.TBUILD_WORKER || undefined)),
    ...nonEmpty("tags", tags),
    ...(values.push === true ? { push: true } : {}),
    ...(values.pull === true ? { pull: true } : {}),
    ...(values.jobs !== undefined ? { jobs: positiveInt(text(values, "jobs")!, "--jobs") } : {}),
    ...(values["step-timeout"] !== undefined
      ? { stepTimeoutMs: parseStepTimeout(text(values, "step-timeout")!) }
      : {}),
    ...optional("iidFile", text(values, "iidfile")),
    ...optional("metadataFile", text(values, "metadata-file")),
    ...(values.explain === true ? { explain: true } : {}),
    ...(attestations !== undefined ? { attestations } : {}),
  };
  return request;
}

function optional<K extends string>(key: K, value: string | undefined): { [P in K]?: string } {
  return (value !== undefined ? { [key]: value } : {}) as { [P in K]?: string };
}

function nonEmpty<K extends string, V extends object>(key: K, value: V): { [P in K]?: V } {
  return (Object.keys(value).length > 0 ? { [key]: value } : {}) as { [P in K]?: V };
}

/** `--build-context NAME=SRC`, each name once. */
function parseContextFlags(specs: string[]): Record<string, string> {
  const contexts: Record<string, string> = {};
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    if (eq <= 0 || eq === spec.length - 1)
      throw new UsageError(
        `--build-context "${spec}" must be NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://DIR`,
      );
    const name = spec.slice(0, eq);
    if (Object.hasOwn(contexts, name)) throw new UsageError(`--build-context ${name} is given twice`);
    contexts[name] = spec.slice(eq + 1);
  }
  return contexts;
}

/**
 * `--secret id=ID[,src=PATH|source=PATH|env=VAR]`; `id=ID` alone reads the environment variable
 * ID, as buildx does.
 */
function parseSecretFlag(spec: string): SecretRequest {
  const fields = Object.fromEntries(
    spec.split(",").map((f) => {
      const eq = f.indexOf("=");
      return eq < 0 ? [f, ""] : [f.slice(0, eq), f.slice(eq + 1)];
    }),
  ) as Record<string, string>;
  const id = fields.id;
  if (!id) throw new UsageError(`--secret "${spec}" has no id=`);
  const src = fields.src ?? fields.source;
  if (src !== undefined) return { id, src };
  return fields.env !== undefined ? { id, env: fields.env } : { id };
}

/** `--ssh default` forwards $SSH_AUTH_SOCK; `--ssh ID=SOCKET` a given agent socket. */
function parseSshFlag(spec: string): SshRequest {
  const eq = spec.indexOf("=");
  return eq < 0 ? { id: spec } : { id: spec.slice(0, eq), socket: spec.slice(eq + 1) };
}

/** `--step-timeout 30s|5m|1h`. */
function parseStepTimeout(value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms < 1) {
    throw new UsageError(`--step-timeout takes a duration such as 30s, 5m or 1h, not "${value}"`);
  }
  return ms;
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`${flag} takes a whole number of at least 1, not "${value}"`);
  return n;
}
