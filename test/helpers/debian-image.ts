/**
 * `debian:bookworm-slim` as Docker Hub serves it, made here without Docker Hub: the mmdebstrap
 * root filesystem of `debian.ts`, plus the settings that Docker's official Debian images add
 * (debuerreotype's `minimizing-config` and `slimify` steps), so that a Dockerfile written for the
 * real image meets the same apt and dpkg behaviour:
 * - `/etc/apt/apt.conf.d/docker-clean` deletes downloaded .deb files after every install (which is
 *   why Docker's docs remove it before using a cache mount for /var/cache/apt);
 * - `/etc/dpkg/dpkg.cfg.d/docker-apt-speedup` (`force-unsafe-io`) and the slim variant's
 *   `path-exclude`s for documentation, man pages and locales make installs faster and smaller;
 * - `policy-rc.d` keeps packages from starting services.
 * The settings are those of github.com/debuerreotype/debuerreotype (scripts/
 * debuerreotype-minimizing-config, scripts/.slimify-excludes), written out here.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { tbuild } from "./cli.js";
import { importDebian } from "./debian.js";

const ROOTFS_NAME = "tbuild-test/debian-rootfs:bookworm-minbase";

const APT_CLEAN =
  '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";';

/** The files Docker's Debian images add, by path in the image. */
const DOCKER_DEBIAN_FILES: Record<string, { mode: number; text: string }> = {
  "/usr/sbin/policy-rc.d": {
    mode: 0o755,
    text: "#!/bin/sh\n# Services do not start during image builds.\nexit 101\n",
  },
  "/etc/dpkg/dpkg.cfg.d/docker-apt-speedup": {
    mode: 0o644,
    text: "# A build step does not need to survive power loss: skip dpkg's syncs.\nforce-unsafe-io\n",
  },
  "/etc/apt/apt.conf.d/docker-clean": {
    mode: 0o644,
    text: [
      "# Delete downloaded packages after every install, so that they do not stay in a layer.",
      `DPkg::Post-Invoke { ${APT_CLEAN} };`,
      `APT::Update::Post-Invoke { ${APT_CLEAN} };`,
      'Dir::Cache::pkgcache "";',
      'Dir::Cache::srcpkgcache "";',
      "",
    ].join("\n"),
  },
  "/etc/apt/apt.conf.d/docker-autoremove-suggests": {
    mode: 0o644,
    text: 'Apt::AutoRemove::SuggestsImportant "false";\n',
  },
  "/etc/apt/apt.conf.d/docker-gzip-indexes": { mode: 0o644, text: 'Acquire::GzipIndexes "true";\n' },
  "/etc/apt/apt.conf.d/docker-no-languages": { mode: 0o644, text: 'Acquire::Languages "none";\n' },
  "/etc/dpkg/dpkg.cfg.d/docker": {
    mode: 0o644,
    text: [
      "# The slim variant: files that containers seldom need are not installed.",
      ...[
        "/usr/share/doc/*",
        "/usr/share/groff/*",
        "/usr/share/info/*",
        "/usr/share/linda/*",
        "/usr/share/lintian/overrides/*",
        "/usr/share/locale/*",
        "/usr/share/man/*",
      ].map((pattern) => `path-exclude ${pattern}`),
      "path-include /usr/share/doc/*/copyright",
      "",
    ].join("\n"),
  },
};

/**
 * Makes `name` (e.g. `debian:bookworm-slim`) in the store at `storeRoot`: the Debian root
 * filesystem with Docker's Debian settings in a second layer, `CMD ["bash"]`. `contextDir` is an
 * empty directory for the build context.
 */
export async function makeDockerDebianSlim(
  storeRoot: string,
  name: string,
  contextDir: string,
): Promise<void> {
  await importDebian(storeRoot, ROOTFS_NAME);
  for (const [target, file] of Object.entries(DOCKER_DEBIAN_FILES)) {
    const source = path.join(contextDir, "rootfs", target);
    mkdirSync(path.dirname(source), { recursive: true });
    writeFileSync(source, file.text);
    chmodSync(source, file.mode);
  }
  writeFileSync(path.join(contextDir, "Dockerfile"), `FROM ${ROOTFS_NAME}\nCOPY rootfs/ /\n`);
  const result = tbuild(["build", "--progress=quiet", "-t", name, contextDir], {
    env: { TBUILD_ROOT: storeRoot },
  });
  if (result.status !== 0) throw new Error(`building ${name} failed (${result.status}): ${result.stderr}`);
}
