/**
 * End to end: real multi-stage Dockerfiles built on busybox and Debian base images that a real
 * registry serves (made locally, pushed with `tbuild push`), into an empty store, so that every
 * FROM is pulled during the build. The results are judged by other tools: podman runs them (from
 * a `-o type=docker` archive, in a private podman store), skopeo reads what `--push` sent, umoci
 * unpacks it. The same builds as the unprivileged `tbuild-test` user give the same digests.
 */
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importDebian } from "../helpers/debian.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import {
  dirOwnedBy,
  PrivatePodman,
  type RunResult,
  skopeoInspect,
  tbuildAs,
  unpackFromRegistry,
} from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const ROOTLESS_USER = "tbuild-test";
/** apt-get update and install from Debian's mirrors: generous, so a slow mirror is not a failure. */
const APT_BUILD_TIMEOUT_MS = 240_000;

const tempDir = tempDirs();
let registry: RunningRegistry;
/** Everything the rootless user must reach lives under here (mode 0755). */
let work: string;
let podman: PrivatePodman;

interface HistoryEntry {
  created_by?: string;
  empty_layer?: boolean;
}
interface ImageConfigJson {
  config: {
    User?: string;
    Env?: string[];
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    Labels?: Record<string, string>;
    ExposedPorts?: Record<string, unknown>;
  };
  history: HistoryEntry[];
}
interface ImageSummary {
  Digest: string;
  Layers: string[];
}

const busyboxRef = () => `${registry.host}/base/busybox:1.36`;
const debianRef = () => `${registry.host}/base/debian:bookworm`;

beforeAll(async () => {
  registry = await startRegistry();
  work = tempDir("e2e");
  chmodSync(work, 0o755);
  podman = new PrivatePodman(path.join(work, "podman"));
  // The base images are made in a store of their own and reach the builds only through the registry.
  const baseStore = path.join(work, "base-store");
  await importBusybox(baseStore, busyboxRef());
  await importDebian(baseStore, debianRef());
  for (const ref of [busyboxRef(), debianRef()]) {
    const pushed = tbuild(["push", ref], { env: { TBUILD_ROOT: baseStore } });
    if (pushed.status !== 0) throw new Error(`tbuild push ${ref} failed: ${pushed.stderr}`);
  }
}, 300_000);

afterAll(async () => {
  await registry?.stop();
});

/** A build context under `work`, readable by every user. */
function context(name: string, files: Record<string, string>): string {
  const dir = path.join(work, name);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

/** `tbuild build` into `store`, as root or as the rootless user, with a fixed SOURCE_DATE_EPOCH. */
function build(store: string, args: string[], user?: string): RunResult {
  return tbuildAs(
    user,
    { TBUILD_ROOT: store, TBUILD_CONFIG: "/dev/null", SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
    ["build", "--progress=plain", ...args],
  );
}

function manifestDigest(metadataFile: string): string {
  return (JSON.parse(readFileSync(metadataFile, "utf8")) as Record<string, string>)["containerimage.digest"]!;
}

function ownerAndMode(file: string): string {
  const stat = statSync(file);
  return `${stat.uid}:${stat.gid} ${(stat.mode & 0o7777).toString(8)}`;
}

/** The history lines an image adds to its base's: one per instruction of the final stage. */
function addedHistory(image: ImageConfigJson, base: ImageConfigJson): HistoryEntry[] {
  expect(image.history.slice(0, base.history.length)).toEqual(base.history);
  return image.history.slice(base.history.length);
}

describe("a Debian build stage with apt-get, and a busybox final stage", () => {
  const inventory = {
    name: "e2e",
    version: "1.2.3",
    items: [
      { sku: "a", qty: 2 },
      { sku: "b", qty: 5 },
      { sku: "c", qty: 1 },
    ],
  };
  /** What jq's filter below makes of `inventory`, one line of compact JSON. */
  const summary = `${JSON.stringify({ name: "e2e", version: "1.2.3", items: 3, total: 8 })}\n`;
  const dockerfile = () => `# syntax=docker/dockerfile:1
FROM ${debianRef()} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    apt-get update && apt-get install -y --no-install-recommends jq
WORKDIR /src
COPY inventory.json .
RUN jq -c '{name, version, items: (.items | length), total: ([.items[].qty] | add)}' inventory.json > summary.json

FROM ${busyboxRef()}
ENV APP_HOME=/srv/app GREETING="hello from e2e" PATH=/srv/app/bin:$PATH
RUN echo "app:x:1001:1001:app:/srv/app:/bin/sh" >> /etc/passwd && echo "app:x:1001:" >> /etc/group
COPY --chown=app:app --from=build /src/summary.json /srv/app/summary.json
COPY --chmod=755 entrypoint.sh /usr/local/bin/entrypoint.sh
USER app
WORKDIR /srv/app
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["summary"]
`;
  /** The final stage's instructions, in order: each adds one history line; these four add a layer. */
  const finalStage = ["ENV", "RUN", "COPY", "COPY", "USER", "WORKDIR", "ENTRYPOINT", "CMD"];
  const withLayer = new Set(["RUN", "COPY", "WORKDIR"]);
  const entrypoint = `#!/bin/sh
if [ "$1" = summary ]; then
  echo "$GREETING"
  exec cat "$APP_HOME/summary.json"
fi
exec "$@"
`;
  let dir: string;
  let store: string;
  let pushedDigest: string | undefined;

  beforeAll(() => {
    dir = context("apt-app", {
      Dockerfile: dockerfile(),
      "inventory.json": `${JSON.stringify(inventory)}\n`,
      "entrypoint.sh": entrypoint,
    });
    store = path.join(work, "apt-root-store");
  });

  it(
    "builds from the registry's bases into an empty store, and podman runs it as USER in WORKDIR with ENV",
    () => {
      const archive = path.join(work, "apt-app.tar");
      const built = build(store, ["-t", "e2e/apt-app:1", "-o", `type=docker,dest=${archive}`, dir]);
      expect(built.status, built.stderr).toBe(0);
      // The bases came from the registry: the empty store resolved them there.
      expect(built.stderr).toContain(`FROM ${debianRef()}@${skopeoInspect(debianRef()).Digest}`);
      expect(built.stderr).toContain(`FROM ${busyboxRef()}@${skopeoInspect(busyboxRef()).Digest}`);

      expect(podman.load(archive)).toContain("e2e/apt-app:1");
      const image = "docker.io/e2e/apt-app:1";
      const ran = podman.run(image);
      expect(ran.status, ran.stderr).toBe(0);
      expect(ran.stdout).toBe(`hello from e2e\n${summary}`);
      expect(podman.run(image, "id", "-u").stdout).toBe("1001\n");
      expect(podman.run(image, "id", "-un").stdout).toBe("app\n");
      expect(podman.run(image, "pwd").stdout).toBe("/srv/app\n");
      const env = podman.run(image, "env").stdout.split("\n");
      expect(env).toEqual(
        expect.arrayContaining([
          "APP_HOME=/srv/app",
          "GREETING=hello from e2e",
          // The imported busybox sets no PATH: $PATH is the default one, as in BuildKit.
          "PATH=/srv/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]),
      );
    },
    APT_BUILD_TIMEOUT_MS,
  );

  it("pushed, skopeo reads its config and history, and umoci finds the files with their owners and modes", () => {
    const ref = `${registry.host}/e2e/apt-app:root`;
    const metadata = path.join(work, "apt-root.json");
    const built = build(store, [
      // Compared by digest with the rootless build's, pushed under another name: no attestation
      // (whose subjects name the image), so the digest is the image manifest's.
      "--provenance=false",
      "-o",
      `type=image,name=${ref},push=true`,
      "--metadata-file",
      metadata,
      dir,
    ]);
    expect(built.status, built.stderr).toBe(0);
    pushedDigest = manifestDigest(metadata);

    const summaryJson = skopeoInspect(ref) as unknown as ImageSummary;
    expect(summaryJson.Digest).toBe(pushedDigest);
    const base = skopeoInspect(busyboxRef(), { config: true }) as unknown as ImageConfigJson;
    const baseLayers = (skopeoInspect(busyboxRef()) as unknown as ImageSummary).Layers;
    expect(summaryJson.Layers.slice(0, baseLayers.length)).toEqual(baseLayers);
    expect(summaryJson.Layers).toHaveLength(
      baseLayers.length + finalStage.filter((k) => withLayer.has(k)).length,
    );

    const config = skopeoInspect(ref, { config: true }) as unknown as ImageConfigJson;
    expect(config.config.Entrypoint).toEqual(["/usr/local/bin/entrypoint.sh"]);
    expect(config.config.Cmd).toEqual(["summary"]);
    expect(config.config.User).toBe("app");
    expect(config.config.WorkingDir).toBe("/srv/app");
    expect(config.config.Env).toEqual(
      expect.arrayContaining([
        "APP_HOME=/srv/app",
        "GREETING=hello from e2e",
        "PATH=/srv/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ]),
    );
    const added = addedHistory(config, base);
    expect(added.map((h) => h.created_by?.split(" ")[0])).toEqual(finalStage);
    expect(added.map((h) => !h.empty_layer)).toEqual(finalStage.map((k) => withLayer.has(k)));

    const rootfs = unpackFromRegistry(ref, path.join(work, "apt-unpacked"));
    expect(readFileSync(path.join(rootfs, "srv/app/summary.json"), "utf8")).toBe(summary);
    expect(ownerAndMode(path.join(rootfs, "srv/app/summary.json"))).toBe("1001:1001 644");
    expect(readFileSync(path.join(rootfs, "usr/local/bin/entrypoint.sh"), "utf8")).toBe(entrypoint);
    expect(ownerAndMode(path.join(rootfs, "usr/local/bin/entrypoint.sh"))).toBe("0:0 755");
    // Nothing of the Debian build stage but the artifact: no jq, no apt cache.
    expect(() => statSync(path.join(rootfs, "usr/bin/jq"))).toThrow();
    expect(() => statSync(path.join(rootfs, "var/cache/apt"))).toThrow();
  });

  it(
    "as the unprivileged user, apt-get drops to _apt and the image has the same digest",
    () => {
      expect(pushedDigest, "the root build of the test before").toBeDefined();
      const userStore = path.join(dirOwnedBy(work, "apt-user", ROOTLESS_USER), "store");
      const metadata = path.join(dirOwnedBy(work, "apt-user-out", ROOTLESS_USER), "metadata.json");
      const ref = `${registry.host}/e2e/apt-app:rootless`;
      const built = build(
        userStore,
        ["--provenance=false", "-o", `type=image,name=${ref},push=true`, "--metadata-file", metadata, dir],
        ROOTLESS_USER,
      );
      expect(built.status, built.stderr).toBe(0);
      expect(built.stderr).toContain("Setting up jq");
      // apt warns so when it cannot hand the download to _apt.
      expect(built.stderr).not.toMatch(/unsandboxed/i);
      expect(manifestDigest(metadata)).toBe(pushedDigest);
      expect((skopeoInspect(ref) as unknown as ImageSummary).Digest).toBe(pushedDigest);
    },
    APT_BUILD_TIMEOUT_MS,
  );
});

describe("two independent stages combined with COPY --from and COPY --link", () => {
  const dockerfile = () => `FROM ${busyboxRef()} AS assets
WORKDIR /out
RUN mkdir -p site/css \\
 && echo 'body { color: teal; }' > site/css/main.css \\
 && echo '<h1>e2e</h1>' > site/index.html \\
 && chmod 0640 site/index.html

FROM ${busyboxRef()} AS config
ARG APP_MODE=production
RUN mkdir /out && printf 'mode=%s\\nport=8080\\n' "$APP_MODE" > /out/app.ini

FROM ${busyboxRef()}
COPY --link --from=assets /out/site /var/www/
COPY --link --from=config --chown=65534:65534 --chmod=0600 /out/app.ini /etc/app/app.ini
COPY --from=config /out/app.ini /etc/app/defaults.ini
LABEL org.opencontainers.image.title=site
EXPOSE 8080
CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/var/www"]
`;
  const finalStage = ["COPY", "COPY", "COPY", "LABEL", "EXPOSE", "CMD"];
  let dir: string;
  let store: string;
  let pushedDigest: string | undefined;
  const ref = () => `${registry.host}/e2e/site:root`;

  beforeAll(() => {
    dir = context("site", { Dockerfile: dockerfile() });
    store = path.join(work, "site-root-store");
  });

  it("--push sends it to the registry, and podman runs the docker archive with every file in place", () => {
    const archive = path.join(work, "site.tar");
    const iid = path.join(work, "site.iid");
    const built = build(store, ["--provenance=false", "-t", ref(), "--push", "--iidfile", iid, dir]);
    expect(built.status, built.stderr).toBe(0);
    pushedDigest = readFileSync(iid, "utf8").trim();
    expect((skopeoInspect(ref()) as unknown as ImageSummary).Digest).toBe(pushedDigest);

    const exported = build(store, ["-t", "e2e/site:local", "-o", `type=docker,dest=${archive}`, dir]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stderr).toContain("0 step(s) ran");
    expect(podman.load(archive)).toContain("e2e/site:local");
    const ran = podman.run(
      "docker.io/e2e/site:local",
      "sh",
      "-c",
      "id -u; cat /var/www/index.html /var/www/css/main.css /etc/app/app.ini /etc/app/defaults.ini",
    );
    expect(ran.status, ran.stderr).toBe(0);
    const ini = "mode=production\nport=8080\n";
    expect(ran.stdout).toBe(`0\n<h1>e2e</h1>\nbody { color: teal; }\n${ini}${ini}`);
  });

  it("skopeo reads one layer per COPY and the config; umoci finds owners and modes, the base's /etc untouched", () => {
    expect(pushedDigest, "the root build of the test before").toBeDefined();
    const baseLayers = (skopeoInspect(busyboxRef()) as unknown as ImageSummary).Layers;
    const summaryJson = skopeoInspect(ref()) as unknown as ImageSummary;
    expect(summaryJson.Layers.slice(0, baseLayers.length)).toEqual(baseLayers);
    expect(summaryJson.Layers).toHaveLength(baseLayers.length + 3);

    const config = skopeoInspect(ref(), { config: true }) as unknown as ImageConfigJson;
    const base = skopeoInspect(busyboxRef(), { config: true }) as unknown as ImageConfigJson;
    expect(config.config.Cmd).toEqual(["httpd", "-f", "-v", "-p", "8080", "-h", "/var/www"]);
    expect(config.config.Entrypoint ?? null).toBeNull();
    expect(config.config.User ?? "").toBe("");
    expect(config.config.Labels).toEqual({ "org.opencontainers.image.title": "site" });
    expect(Object.keys(config.config.ExposedPorts ?? {})).toEqual(["8080/tcp"]);
    const added = addedHistory(config, base);
    expect(added.map((h) => h.created_by?.split(" ")[0])).toEqual(finalStage);
    expect(added.filter((h) => !h.empty_layer)).toHaveLength(3);

    const rootfs = unpackFromRegistry(ref(), path.join(work, "site-unpacked"));
    const at = (p: string) => ownerAndMode(path.join(rootfs, p));
    expect(at("var/www/index.html")).toBe("0:0 640");
    expect(at("var/www/css/main.css")).toBe("0:0 644");
    expect(at("etc/app/app.ini")).toBe("65534:65534 600");
    expect(at("etc/app/defaults.ini")).toBe("0:0 644");
    // The linked layer brings /etc only as the path to /etc/app: the base's /etc keeps its owner.
    expect(at("etc")).toBe(
      ownerAndMode(path.join(unpackFromRegistry(busyboxRef(), path.join(work, "bb")), "etc")),
    );
    expect(readFileSync(path.join(rootfs, "etc/passwd"), "utf8")).toContain("root:x:0:0");

    // podman reads the pushed (OCI) manifest as well as the docker archive.
    podman.pull(ref());
    const ran = podman.run(ref(), "stat", "-c", "%u:%g %a %n", "/etc/app/app.ini", "/var/www/index.html");
    expect(ran.stdout).toBe("65534:65534 600 /etc/app/app.ini\n0:0 640 /var/www/index.html\n");
  });

  it("as the unprivileged user, the same build pushes the same digest", () => {
    expect(pushedDigest, "the root build of the first test").toBeDefined();
    const userStore = path.join(dirOwnedBy(work, "site-user", ROOTLESS_USER), "store");
    const iid = path.join(dirOwnedBy(work, "site-user-out", ROOTLESS_USER), "iid");
    const userRef = `${registry.host}/e2e/site:rootless`;
    const built = build(
      userStore,
      ["--provenance=false", "-t", userRef, "--push", "--iidfile", iid, dir],
      ROOTLESS_USER,
    );
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(iid, "utf8").trim()).toBe(pushedDigest);
    expect((skopeoInspect(userRef) as unknown as ImageSummary).Digest).toBe(pushedDigest);
  });
});
