/**
 * The SBOM scanner against a hostile image: symlinks out of the root where it reads by name
 * (etc/os-release, a copyright file, Python metadata) and where it walks (node_modules to `/`, to
 * the canary), a dpkg status larger than its limit, apk's database as a FIFO, a package.json that
 * is not JSON. The scan reads nothing outside the image (the canary's path resolves to a decoy
 * inside it), stays bounded, names each bad entry in a warning, and finishes; the store stays
 * usable. Scanned as root, and as the rootless user inside a user namespace like tbuild's.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";

const world = hostileWorld();

function scanAs(mode: Mode, store: string, image: string) {
  const command = [
    path.join(projectRoot, "node_modules/.bin/node"),
    path.join(projectRoot, "test/hostile/sbom-scan.ts"),
    store,
    image,
  ];
  const args =
    mode === "rootless"
      ? [
          "runuser",
          "-u",
          ROOTLESS_USER,
          "--",
          "unshare",
          "--user",
          "--map-auto",
          "--map-root-user",
          "--",
          ...command,
        ]
      : command;
  const result = spawnSync(args[0]!, args.slice(1), {
    encoding: "utf8",
    maxBuffer: 64 << 20,
    timeout: 300_000,
  });
  return { status: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
}

describe.each(MODES)("the SBOM of a hostile image (%s)", (mode) => {
  it("reads nothing outside the image, skips what is too large or not a file, and names bad entries", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const c = canary.dir;
    const dockerfile = `FROM busybox
RUN mkdir -p /etc /var/lib/dpkg/status.d /usr/share/doc/victim /app/node_modules/bad /app2 /lib/apk/db \\
      /usr/lib/python3/dist-packages/x-1.dist-info ${c} \\
 && echo ID=inside > ${c}/secret \\
 && rm -f /etc/os-release && ln -s ${c}/secret /etc/os-release \\
 && ln -s ../../../../../../../../../..${c}/secret /usr/share/doc/victim/copyright \\
 && printf 'Package: victim\\nVersion: 1.0\\nArchitecture: all\\n' > /var/lib/dpkg/status.d/victim \\
 && ln -s / /app/node_modules/loop \\
 && ln -s ${c} /app2/node_modules \\
 && echo '{"name": "bad", "version": ' > /app/node_modules/bad/package.json \\
 && ln -s ${c}/secret /usr/lib/python3/dist-packages/evil.egg-info \\
 && ln -s ${c}/secret /usr/lib/python3/dist-packages/x-1.dist-info/METADATA \\
 && mkfifo /lib/apk/db/installed \\
 && head -c 70000000 /dev/zero > /var/lib/dpkg/status
`;
    const ctx = world.context({ Dockerfile: dockerfile });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "sbom-hostile", ctx]);
    expect(built.status, built.stderr).toBe(0);

    const scanned = scanAs(mode, store, "sbom-hostile");
    expect(scanned.status, scanned.stderr).toBe(0);
    const { warnings, packages, document } = JSON.parse(scanned.stdout) as {
      warnings: string[];
      packages: { name: string; purl: string; license?: string; foundIn: string }[];
      document: unknown;
    };
    // etc/os-release resolved inside the image, to the decoy there, never to the canary.
    expect(packages).toEqual([
      {
        type: "deb",
        name: "victim",
        version: "1.0",
        purl: "pkg:deb/inside/victim@1.0?arch=all&distro=inside",
        foundIn: "/var/lib/dpkg/status.d/victim",
      },
    ]);
    expect(warnings).toEqual([
      "/app/node_modules/bad/package.json: not JSON: the package is not listed",
      "/lib/apk/db/installed: not a regular file (other)",
      // Resolved inside the image: the decoy, which is no metadata.
      "/usr/lib/python3/dist-packages/x-1.dist-info/METADATA: no Name or Version header: the package is not listed",
      "/var/lib/dpkg/status: skipped: 70000000 bytes, more than the limit of 67108864",
    ]);
    expect(JSON.stringify(document)).not.toContain("canary");
    canary.expectUntouched(scanned.stdout, scanned.stderr, built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  }, 600_000);
});
