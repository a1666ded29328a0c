/** The pure rules behind `-v` and image volumes: which anonymous volumes an image's VOLUMEs get. */
import { describe, expect, it } from "vitest";
import { type MountRequest, withImageVolumes } from "../../runtime/mounts.js";

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
