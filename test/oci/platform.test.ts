import { describe, expect, it } from "vitest";
import {
  formatPlatform,
  hostPlatform,
  InvalidPlatformError,
  normalizePlatform,
  type Platform,
  parsePlatform,
  platformMatches,
  selectPlatform,
} from "../../oci/platform.js";

const host = hostPlatform();

describe("parsePlatform", () => {
  // [specifier, the normalized platform, how it prints]
  const table: Array<[string, Platform, string]> = [
    ["linux/amd64", { os: "linux", architecture: "amd64" }, "linux/amd64"],
    ["linux/arm64", { os: "linux", architecture: "arm64" }, "linux/arm64"],
    ["linux/arm64/v8", { os: "linux", architecture: "arm64" }, "linux/arm64"],
    ["linux/aarch64", { os: "linux", architecture: "arm64" }, "linux/arm64"],
    ["linux/arm64/v8.0", { os: "linux", architecture: "arm64" }, "linux/arm64"],
    ["linux/arm64/9.0", { os: "linux", architecture: "arm64", variant: "v9" }, "linux/arm64/v9"],
    ["linux/arm64/v8.2", { os: "linux", architecture: "arm64", variant: "v8.2" }, "linux/arm64/v8.2"],
    ["Aarch64", { os: "linux", architecture: "arm64" }, "linux/arm64"],
    ["linux/arm", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["linux/arm/v7", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["linux/arm/7", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["linux/arm/v6", { os: "linux", architecture: "arm", variant: "v6" }, "linux/arm/v6"],
    ["linux/arm/6", { os: "linux", architecture: "arm", variant: "v6" }, "linux/arm/v6"],
    ["linux/armhf", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["armhf", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["armel", { os: "linux", architecture: "arm", variant: "v6" }, "linux/arm/v6"],
    ["arm", { os: "linux", architecture: "arm", variant: "v7" }, "linux/arm/v7"],
    ["x86_64", { os: "linux", architecture: "amd64" }, "linux/amd64"],
    ["linux/x86-64", { os: "linux", architecture: "amd64" }, "linux/amd64"],
    ["Linux/x86_64", { os: "linux", architecture: "amd64" }, "linux/amd64"],
    ["linux/amd64/v1", { os: "linux", architecture: "amd64" }, "linux/amd64"],
    ["linux/amd64/v3", { os: "linux", architecture: "amd64", variant: "v3" }, "linux/amd64/v3"],
    ["i386", { os: "linux", architecture: "386" }, "linux/386"],
    ["s390x", { os: "linux", architecture: "s390x" }, "linux/s390x"],
    ["linux/ppc64le", { os: "linux", architecture: "ppc64le" }, "linux/ppc64le"],
    ["linux/riscv64", { os: "linux", architecture: "riscv64" }, "linux/riscv64"],
    ["windows/amd64", { os: "windows", architecture: "amd64" }, "windows/amd64"],
    ["macOS/arm64", { os: "darwin", architecture: "arm64" }, "darwin/arm64"],
    [
      "windows(10.0.17763)/amd64",
      { os: "windows", architecture: "amd64", "os.version": "10.0.17763" },
      "windows(10.0.17763)/amd64",
    ],
    [
      "windows(10.0.17763+win32k)/amd64",
      { os: "windows", architecture: "amd64", "os.version": "10.0.17763", "os.features": ["win32k"] },
      "windows(10.0.17763+win32k)/amd64",
    ],
    [
      "linux(+unsorted+erofs)/amd64",
      { os: "linux", architecture: "amd64", "os.features": ["erofs", "unsorted"] },
      "linux(+erofs+unsorted)/amd64",
    ],
    [
      "windows(10.0.17763%2Bbuild.42)/amd64",
      { os: "windows", architecture: "amd64", "os.version": "10.0.17763+build.42" },
      "windows(10.0.17763%2Bbuild.42)/amd64",
    ],
    [
      "windows(50%25done)/amd64",
      { os: "windows", architecture: "amd64", "os.version": "50%done" },
      "windows(50%25done)/amd64",
    ],
    ["windows()/amd64", { os: "windows", architecture: "amd64" }, "windows/amd64"],
  ];
  it.each(table)("%s → %j, printed %s", (specifier, platform, printed) => {
    expect(parsePlatform(specifier)).toEqual(platform);
    expect(formatPlatform(parsePlatform(specifier))).toBe(printed);
    expect(parsePlatform(printed)).toEqual(platform);
  });

  it("completes an operating system alone with the host's architecture", () => {
    const expected = { ...host, os: "linux" };
    expect(parsePlatform("linux")).toEqual(expected);
    expect(parsePlatform("windows")).toEqual({ ...host, os: "windows" });
    expect(parsePlatform("linux(+gpu)")).toEqual({ ...expected, "os.features": ["gpu"] });
  });

  const invalid: Array<[string, string]> = [
    ["", "the platform is empty"],
    ["/linux/arm", '"" is not a valid operating system'],
    ["linux/arm/", '"" is not a valid variant'],
    ["linux /arm", '"linux " is not a valid operating system'],
    ["linux/&arm", '"&arm" is not a valid architecture'],
    ["linux/arm/foo/bar", "too many components"],
    ["linux/*", "wildcards are not supported"],
    ["frobnix", '"frobnix" is neither a known operating system nor a known architecture'],
    ["windows(10%zz)/amd64", "has an invalid %-escape"],
  ];
  it.each(invalid)("rejects %j: %s", (specifier, reason) => {
    let error: unknown;
    try {
      parsePlatform(specifier);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidPlatformError);
    expect((error as InvalidPlatformError).message).toBe(
      `invalid platform ${JSON.stringify(specifier)}: ${(error as InvalidPlatformError).message.split(": ").slice(1).join(": ")}`,
    );
    expect((error as InvalidPlatformError).message).toContain(reason);
    expect((error as InvalidPlatformError).code).toBe("E_INVALID_PLATFORM");
    expect((error as InvalidPlatformError).specifier).toBe(specifier);
  });
});

describe("normalizePlatform and formatPlatform", () => {
  it("normalizes image platforms as containerd does", () => {
    expect(normalizePlatform({ os: "linux", architecture: "arm64", variant: "v8" })).toEqual({
      os: "linux",
      architecture: "arm64",
    });
    expect(normalizePlatform({ os: "linux", architecture: "arm" })).toEqual({
      os: "linux",
      architecture: "arm",
      variant: "v7",
    });
    expect(normalizePlatform({ os: "", architecture: "X86_64", "os.features": ["b", "a", "b"] })).toEqual({
      os: "linux",
      architecture: "amd64",
      "os.features": ["a", "b"],
    });
  });

  it("prints the unknown platform of attestation manifests and escapes ambiguous characters", () => {
    expect(formatPlatform({ os: "", architecture: "" })).toBe("unknown");
    expect(formatPlatform({ os: "unknown", architecture: "unknown" })).toBe("unknown/unknown");
    expect(formatPlatform({ os: "windows", architecture: "amd64", "os.version": "1.0(beta)" })).toBe(
      "windows(1.0%28beta%29)/amd64",
    );
    expect(formatPlatform({ os: "windows", architecture: "amd64", "os.version": "a/b" })).toBe(
      "windows(a%2Fb)/amd64",
    );
    expect(
      formatPlatform({ os: "linux", architecture: "amd64", "os.features": ["", "gpu", "", "simd"] }),
    ).toBe("linux(+gpu+simd)/amd64");
    expect(formatPlatform({ os: "linux", architecture: "amd64", "os.features": ["feat+v2"] })).toBe(
      "linux(+feat%2Bv2)/amd64",
    );
  });
});

describe("hostPlatform", () => {
  it("describes this machine in Go's names", () => {
    const goArch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386" };
    expect(host.os).toBe(process.platform === "win32" ? "windows" : process.platform);
    if (goArch[process.arch] !== undefined) expect(host.architecture).toBe(goArch[process.arch]);
    expect(hostPlatform()).toEqual(host);
  });

  it("maps Node's names to Go's", () => {
    expect(hostPlatform({ platform: "linux", arch: "x64" })).toEqual({ os: "linux", architecture: "amd64" });
    expect(hostPlatform({ platform: "linux", arch: "ia32" })).toEqual({ os: "linux", architecture: "386" });
    expect(hostPlatform({ platform: "darwin", arch: "arm64" })).toEqual({
      os: "darwin",
      architecture: "arm64",
    });
    expect(hostPlatform({ platform: "win32", arch: "x64" })).toEqual({
      os: "windows",
      architecture: "amd64",
    });
    expect(hostPlatform({ platform: "linux", arch: "ppc64", endianness: "LE" })).toEqual({
      os: "linux",
      architecture: "ppc64le",
    });
    expect(hostPlatform({ platform: "linux", arch: "ppc64", endianness: "BE" })).toEqual({
      os: "linux",
      architecture: "ppc64",
    });
    expect(hostPlatform({ platform: "linux", arch: "mipsel" })).toEqual({
      os: "linux",
      architecture: "mipsle",
    });
  });

  it("reads the ARM variant from /proc/cpuinfo", () => {
    const arm = (cpuinfo?: string, machine?: string) =>
      hostPlatform({ platform: "linux", arch: "arm", cpuinfo, machine });
    expect(arm("processor\t: 0\nCPU architecture: 7\n")).toEqual({
      os: "linux",
      architecture: "arm",
      variant: "v7",
    });
    expect(arm("CPU architecture: 6TEJ\n")).toEqual({ os: "linux", architecture: "arm", variant: "v6" });
    expect(arm("CPU architecture: 8\n")).toEqual({ os: "linux", architecture: "arm", variant: "v8" });
    expect(arm("model name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n")).toEqual({
      os: "linux",
      architecture: "arm",
      variant: "v6",
    });
  });

  it("falls back to uname's machine name, then to v7", () => {
    const arm = (cpuinfo?: string, machine?: string) =>
      hostPlatform({ platform: "linux", arch: "arm", cpuinfo, machine });
    expect(arm("processor: 0\n", "armv6l").variant).toBe("v6");
    expect(arm(undefined, "armv5tel").variant).toBe("v5");
    expect(arm(undefined, undefined).variant).toBe("v7");
    expect(arm("CPU architecture: ?\n", undefined).variant).toBe("v7");
  });
});

describe("platformMatches (containerd's Only)", () => {
  const cases: Array<[string, string[], string[]]> = [
    [
      "linux/amd64",
      ["linux/amd64", "linux/386"],
      ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64"],
    ],
    [
      "linux/amd64/v2",
      ["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
      ["linux/amd64/v3", "linux/amd64/v4", "linux/arm/v7", "linux/arm64", "windows/amd64"],
    ],
    ["linux/386", ["linux/386"], ["linux/amd64", "linux/arm/v7", "linux/arm64"]],
    ["windows/amd64", ["windows/amd64", "windows(10.0.17763)/amd64"], ["linux/amd64", "windows/arm"]],
    [
      "linux/arm/v8",
      ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
      ["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/arm"],
    ],
    [
      "linux/arm/v7",
      ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
      ["linux/amd64", "linux/arm/v4", "linux/arm/v8", "linux/arm64"],
    ],
    [
      "linux/arm/v6",
      ["linux/arm/v5", "linux/arm/v6"],
      ["linux/arm", "linux/arm/v4", "linux/arm/v7", "linux/arm64"],
    ],
    ["linux/arm/v5", ["linux/arm/v5"], ["linux/arm", "linux/arm/v4", "linux/arm/v6"]],
    ["linux/arm/v4", ["linux/arm/v4"], ["linux/arm", "linux/arm/v5"]],
    [
      "linux/arm64/v9",
      [
        "linux/arm",
        "linux/arm/v5",
        "linux/arm/v8",
        "linux/arm64",
        "linux/arm64/v8",
        "linux/arm64/v8.1",
        "linux/arm64/v8.5",
        "linux/arm64/v9",
        "linux/arm64/v9.0",
      ],
      ["linux/amd64", "linux/arm/v4", "windows/arm", "linux/arm64/v8.6"],
    ],
    [
      "linux/arm64/v8.1",
      ["linux/arm", "linux/arm/v5", "linux/arm/v8", "linux/arm64", "linux/arm64/v8", "linux/arm64/v8.1"],
      ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9"],
    ],
    [
      "linux/arm64",
      [
        "linux/arm",
        "linux/arm/v5",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm/v8",
        "linux/arm64",
        "linux/arm64/v8",
      ],
      ["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64"],
    ],
  ];
  it.each(cases)("%s runs %j but not %j", (wanted, yes, no) => {
    const platform = parsePlatform(wanted);
    for (const candidate of yes)
      expect(platformMatches(platform, parsePlatform(candidate)), candidate).toBe(true);
    for (const candidate of no)
      expect(platformMatches(platform, parsePlatform(candidate)), candidate).toBe(false);
  });

  it("compares image platforms in their raw, unnormalized form", () => {
    const wanted = parsePlatform("linux/arm64");
    expect(platformMatches(wanted, { os: "linux", architecture: "aarch64", variant: "v8" })).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm"), { os: "linux", architecture: "armhf" })).toBe(true);
    expect(platformMatches(parsePlatform("linux/arm/v6"), { os: "linux", architecture: "armel" })).toBe(true);
  });

  it("requires an image's OS features to be among the wanted ones", () => {
    const wanted: Platform = { os: "linux", architecture: "amd64", "os.features": ["gpu", "simd"] };
    expect(platformMatches(wanted, { os: "linux", architecture: "amd64" })).toBe(true);
    expect(platformMatches(wanted, { os: "linux", architecture: "amd64", "os.features": ["simd"] })).toBe(
      true,
    );
    expect(platformMatches(wanted, { os: "linux", architecture: "amd64", "os.features": ["erofs"] })).toBe(
      false,
    );
    expect(platformMatches({ os: "linux", architecture: "amd64" }, wanted)).toBe(false);
  });

  it("matches Windows builds as containerd does", () => {
    const ltsc2019 = { os: "windows", architecture: "amd64", "os.version": "10.0.17763" };
    const ltsc2022 = { os: "windows", architecture: "amd64", "os.version": "10.0.20348" };
    const win11 = { os: "windows", architecture: "amd64", "os.version": "10.0.22621" };
    expect(platformMatches(ltsc2019, { ...ltsc2019, "os.version": "10.0.17763.1234" })).toBe(true);
    expect(platformMatches(ltsc2019, ltsc2022)).toBe(false);
    expect(platformMatches(win11, ltsc2022)).toBe(true);
    expect(platformMatches(win11, ltsc2019)).toBe(false);
    expect(platformMatches(ltsc2022, win11)).toBe(false);
    expect(platformMatches({ os: "windows", architecture: "amd64" }, ltsc2019)).toBe(true);
  });
});

describe("selectPlatform picks from an OCI index as containerd does", () => {
  const index = (...specifiers: string[]) =>
    specifiers.map((specifier, i) => ({ digest: `sha256:${i}`, platform: parsePlatform(specifier) }));
  const select = (wanted: string, manifests: Array<{ digest: string; platform?: Platform }>) =>
    selectPlatform(parsePlatform(wanted), manifests, (m) => m.platform)?.digest;

  it("prefers the exact platform over a compatible one, whatever the order", () => {
    expect(select("linux/amd64", index("linux/386", "linux/amd64"))).toBe("sha256:1");
    expect(select("linux/arm/v7", index("linux/arm/v5", "linux/arm/v7", "linux/arm/v6"))).toBe("sha256:1");
    expect(select("linux/arm64", index("linux/arm/v7", "linux/arm64/v8"))).toBe("sha256:1");
  });

  it("falls back to the newest compatible platform", () => {
    expect(select("linux/amd64", index("linux/arm64", "linux/386"))).toBe("sha256:1");
    expect(select("linux/arm64", index("linux/arm/v6", "linux/arm/v7", "linux/amd64"))).toBe("sha256:1");
    expect(select("linux/amd64/v3", index("linux/amd64", "linux/amd64/v2", "linux/amd64/v4"))).toBe(
      "sha256:1",
    );
  });

  it("takes the first of equally good entries", () => {
    expect(select("linux/arm64", index("linux/arm64", "linux/arm64/v8"))).toBe("sha256:0");
  });

  it("returns undefined when nothing can run, and skips entries without a platform", () => {
    expect(select("linux/s390x", index("linux/amd64", "linux/arm64"))).toBeUndefined();
    expect(
      select("linux/amd64", [{ digest: "sha256:attestation" }, ...index("unknown/unknown", "linux/amd64")]),
    ).toBe("sha256:1");
  });

  it("selects among plain platforms too", () => {
    const platforms = [parsePlatform("linux/arm/v6"), parsePlatform("linux/arm64")];
    expect(selectPlatform(parsePlatform("linux/arm64/v8"), platforms)).toBe(platforms[1]);
  });
});
