/**
 * What the oracle builds (conformance.test.ts): the examples, and the ported BuildKit scenarios
 * (test/fixtures/buildkit-scenarios) that BuildKit 0.8's embedded frontend can build as they are.
 *
 * A scenario is in when it is one successful build of a Dockerfile in the 1.2 syntax from a plain
 * context, with the base images both builders are given (`busybox`, `alpine`). Everything else is
 * left out by a rule of `outOfReach`, whose reasons the test prints: nothing is left out because
 * the two builders disagreed on it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadScenarios, type Scenario, writeEntries } from "../build/buildkit-scenarios-harness.js";
import { projectRoot } from "../helpers/cli.js";
import type { OracleCase } from "./compare.js";

/** The examples whose base images the tests can make without the network (busybox). */
export const EXAMPLES: OracleCase[] = [
  { name: "example-hello", context: path.join(projectRoot, "examples/hello") },
];

/** The host's CA bundle: node-service's README gives it as a secret for TLS-inspecting proxies. */
const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/**
 * The examples on `debian:bookworm-slim` (test/helpers/debian-image.ts makes it with mmdebstrap):
 * they install Debian's packages (and node-service npm's) over the network, so they are built in
 * `npm run oracle` only.
 */
export const DEBIAN_EXAMPLES: OracleCase[] = ["static-binary", "python-cache", "node-service"].map(
  (name) => ({
    name: `example-${name}`,
    context: path.join(projectRoot, "examples", name),
    ...(name === "node-service" && existsSync(HOST_CA_BUNDLE)
      ? { secrets: [`id=ca-certificates,src=${HOST_CA_BUNDLE}`] }
      : {}),
  }),
);

/**
 * Dockerfile syntax newer than 1.2, which BuildKit 0.8 refuses or reads otherwise: heredocs,
 * COPY/ADD --link, --parents, --exclude, ADD --checksum and --keep-git-dir, RUN --network and
 * --security, the `${v%p}`-style expansions (1.6+), `# check=` directives, HEALTHCHECK
 * --start-interval.
 */
const NEWER_SYNTAX: [RegExp, string][] = [
  [/<<-?\s*["']?[A-Za-z_]/, "a heredoc"],
  [/--link\b/, "COPY --link"],
  [/--parents\b/, "COPY --parents"],
  [/--exclude\b/, "COPY --exclude"],
  [/--checksum\b/, "ADD --checksum"],
  [/--keep-git-dir\b/, "ADD --keep-git-dir"],
  [/--network\b/, "RUN --network"],
  [/--security\b/, "RUN --security"],
  [/\$\{[A-Za-z_][A-Za-z0-9_]*(%%?|##?|\/\/?)[^}]*\}/, "a ${v%p}-style expansion"],
  [/^#\s*check\s*=/m, "a # check= directive"],
  [/--start-interval\b/, "HEALTHCHECK --start-interval"],
  [/--chmod=[^0-7\s]/, "a symbolic COPY --chmod"],
  [/--unpack\b/, "ADD --unpack"],
  [/--mount=\S*\$/, "variables in RUN --mount options"],
  [/--mount=\S*type=tmpfs\S*size=/, "a tmpfs mount's size"],
];

/** Why the oracle cannot build the scenario as it is, or undefined when it can. */
export function outOfReach(scenario: Scenario): string | undefined {
  if (scenario.steps) return "a sequence of builds";
  if (scenario.knownDifference) return "a known difference from the Go test (see its fixture)";
  const expect = scenario.expect ?? {};
  if (expect.error !== undefined || expect.errorMatches !== undefined) return "an expected failure";
  if (scenario.gitRepo || scenario.http) return "an HTTP or git source";
  if (scenario.buildContexts) return "named build contexts (1.4 syntax)";
  if (scenario.secrets || scenario.ssh) return "secrets or ssh forwarding";
  if (scenario.platform) return "a platform";
  if (scenario.cacheTo || scenario.cacheFrom || scenario.push || scenario.ociName)
    return "cache or registry export";
  if (scenario.env || scenario.network || scenario.noCacheFilter) return "builder options";
  if (scenario.cwdRelative || scenario.noFileFlag || scenario.file) return "how the Dockerfile is named";
  if (Object.keys(scenario.args ?? {}).some((arg) => arg.startsWith("BUILDKIT_"))) {
    return "a BUILDKIT_ build arg (a builder option newer than 0.8)";
  }
  const dockerfile = dockerfileOf(scenario);
  if (dockerfile === undefined) return "no Dockerfile";
  if (/\{\{[A-Z_]+\}\}/.test(dockerfile) || JSON.stringify(scenario.context ?? {}).includes("{{")) {
    return "a test server's address";
  }
  for (const [pattern, feature] of NEWER_SYNTAX)
    if (pattern.test(dockerfile)) return `${feature} (newer than 1.2)`;
  const unknown = baseImages(dockerfile).find(
    (b) => !["busybox", "busybox:latest", "alpine", "alpine:latest"].includes(b),
  );
  if (unknown !== undefined) return `a base image the oracle does not have (${unknown})`;
  return undefined;
}

/** The image names a Dockerfile's FROM lines give, each once: not its own stages, not scratch. */
function baseImages(dockerfile: string): string[] {
  const stages = new Set(
    [...dockerfile.matchAll(/^\s*FROM\s+.*\s+AS\s+(\S+)/gim)].map((m) => m[1]!.toLowerCase()),
  );
  const named = [...dockerfile.matchAll(/^\s*FROM\s+(?:--platform=\S+\s+)?([^\s\\]+)/gim)].map((m) => m[1]!);
  return [...new Set(named)].filter((b) => b.toLowerCase() !== "scratch" && !stages.has(b.toLowerCase()));
}

function dockerfileOf(scenario: Scenario): string | undefined {
  if (scenario.dockerfile !== undefined) return scenario.dockerfile;
  const inContext = scenario.context?.[scenario.dockerfilePath ?? "Dockerfile"];
  return typeof inContext === "string" ? inContext : undefined;
}

const FIXTURES = fileURLToPath(new URL("../fixtures/buildkit-scenarios/", import.meta.url));

/** Every ported scenario, with why it is out of the oracle's reach (undefined: in). */
export function scenarioCases(): { scenario: Scenario; outOfReach: string | undefined }[] {
  return loadScenarios(FIXTURES).map((scenario) => ({ scenario, outOfReach: outOfReach(scenario) }));
}

/** Lays out the scenario's context under `dir` as the scenario suite does; the case to build. */
export async function layOut(scenario: Scenario, dir: string): Promise<OracleCase> {
  const context = path.join(dir, "context");
  mkdirSync(context, { recursive: true });
  await writeEntries(context, scenario.context ?? {}, {});
  const dockerfileDir = scenario.dockerfileOutside ? path.join(dir, "dockerfile") : context;
  mkdirSync(dockerfileDir, { recursive: true });
  const dockerfile = path.join(dockerfileDir, scenario.dockerfilePath ?? "Dockerfile");
  if (scenario.dockerfile !== undefined) writeFileSync(dockerfile, scenario.dockerfile);
  return {
    name: scenario.name,
    context,
    dockerfile,
    buildArgs: Object.entries(scenario.args ?? {}).map(([k, v]) => `${k}=${v}`),
    ...(scenario.target ? { target: scenario.target } : {}),
    ...(scenario.labels ? { labels: scenario.labels } : {}),
    ...(scenario.noCache ? { noCache: true } : {}),
  };
}

const PARSER_FIXTURES = fileURLToPath(new URL("../fixtures/buildkit-parser/", import.meta.url));

/**
 * A Dockerfile of BuildKit's parser tests (test/fixtures/buildkit-parser), built from its own
 * directory as the context. `bases` are the image names its FROM lines give (not its stages),
 * which both builders are given as busybox: the real images (ubuntu:14.04, …) cannot be pulled
 * here, and what is compared is what each builder makes of the Dockerfile on the same base.
 * `negative`: BuildKit's parser rejects it (testfiles-negative).
 */
export interface ParserFixtureCase extends OracleCase {
  bases: string[];
  negative: boolean;
}

export function parserFixtureCases(): ParserFixtureCase[] {
  const cases: ParserFixtureCase[] = [];
  for (const [folder, negative] of [
    ["testfiles", false],
    ["testfiles-negative", true],
  ] as const) {
    const root = path.join(PARSER_FIXTURES, folder);
    for (const name of readdirSync(root).sort()) {
      const context = path.join(root, name);
      const dockerfile = readFileSync(path.join(context, "Dockerfile"), "utf8");
      cases.push({ name: `parser-${name}`, context, bases: baseImages(dockerfile), negative });
    }
  }
  return cases;
}
