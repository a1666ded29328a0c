/**
 * The pure rules behind `-v` and image volumes: which anonymous volumes an image's VOLUMEs get,
 * and what `:z`/`:Z` do with SELinux off (a note) or enforcing (a clear error), whatever this
 * machine's SELinux is.
 */
import { describe, expect, it } from "vitest";
import { isTbuildError } from "../../errors/index.js";
import {
  type MountRequest,
  parseVolumeFlag,
  relabelDecision,
  withImageVolumes,
} from "../../runtime/mounts.js";

describe("the SELinux relabel options z and Z", () => {
  it("are read alone and combined with ro, as a bind or a volume", () => {
    const name = () => "anon";
    expect(parseVolumeFlag("/a:/b:z", "/", name)).toMatchObject({ kind: "bind", readonly: false });
    expect(parseVolumeFlag("/a:/b:ro,Z", "/", name)).toMatchObject({ kind: "bind", readonly: true });
    expect(parseVolumeFlag("data:/b:z", "/", name)).toMatchObject({ kind: "volume", name: "data" });
    expect(parseVolumeFlag("/b:Z", "/", name)).toMatchObject({ kind: "volume", anonymous: true });
  });

  it("are ignored with a note where SELinux is off: not mounted, or enforce 0", () => {
    expect(relabelDecision("/a:/b:z", undefined)).toBe(
      "-v /a:/b:z: SELinux is not enabled on this host, so :z (relabeling) is ignored",
    );
    expect(relabelDecision("/a:/b:ro,Z", "0\n")).toMatch(
      /^-v \/a:\/b:ro,Z: .* :Z \(relabeling\) is ignored$/,
    );
    expect(relabelDecision("/a:/b:ro", "1\n")).toBeUndefined();
  });

  it("are refused with E_NOT_SUPPORTED where SELinux enforces", () => {
    let error: unknown;
    try {
      relabelDecision("/a:/b:ro,z", "1\n");
    } catch (err) {
      error = err;
    }
    expect(isTbuildError(error) && error.code).toBe("E_NOT_SUPPORTED");
    expect((error as Error).message).toBe(
      "-v /a:/b:ro,z: SELinux is enforcing on this host and relabeling (:z) is not supported yet: drop :z and label the source yourself (chcon -Rt container_file_t SRC)",
    );
  });
});

describe("an image's VOLUMEs", () => {
  let counter = 0;
  const name = () => `anon${++counter}`;

  it("get anonymous volumes where no -v mounts, parents before what lies inside them", () => {
    const flags: MountRequest[] = [
      {
        kind: "volume",
        name: "named",
        destination: "/data/sub",
        readonly: false,
        anonymous: false,
        noCopy: false,
      },
      { kind: "bind", source: "/host", destination: "/logs", readonly: true },
    ];
    const mounts = withImageVolumes({ Volumes: { "/data": {}, "/logs/": {}, "/cache/": {} } }, flags, name);
    expect(mounts.map((m) => [m.destination, m.kind === "volume" ? m.name : m.source])).toEqual([
      ["/logs", "/host"],
      ["/cache", "anon1"],
      ["/data", "anon2"],
      ["/data/sub", "named"],
    ]);
    expect(mounts.find((m) => m.destination === "/cache")).toMatchObject({ anonymous: true, noCopy: false });
    // The -v mounts alone, parents first too (docker sorts them by depth).
    expect(withImageVolumes({}, flags, name)).toEqual([flags[1], flags[0]]);
  });
});
