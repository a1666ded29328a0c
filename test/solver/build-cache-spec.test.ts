/**
 * `--cache-to` and `--cache-from` specs are read as buildx reads them, and an attribute tbuild
 * would not act on is never accepted silently: unknown ones are usage errors listing the type's
 * attributes, and values tbuild cannot honour are "not supported yet".
 */
import { describe, expect, it } from "vitest";
import { checkBuildRequest } from "../../build/request.js";
import { type TbuildError, UsageError } from "../../errors/index.js";
import { parseCacheExportSpec, parseCacheImportSpec } from "../../solver/build-cache.js";

function errorOf(parse: () => unknown): TbuildError {
  try {
    parse();
  } catch (err) {
    return err as TbuildError;
  }
  throw new Error("no error");
}

describe("--cache-to", () => {
  it.each([
    ["type=registry,ref=r.example/c:1,mode=max", { type: "registry", ref: "r.example/c:1", mode: "max" }],
    ["type=local,dest=cache,tag=v1", { type: "local", dest: "/w/cache", mode: "min", tag: "v1" }],
    [
      "type=registry,ref=r/c,ignore-error=true,oci-mediatypes=true,image-manifest=true,compression=gzip,compression-level=9,force-compression=false",
      { type: "registry", ref: "r/c", mode: "min", ignoreError: true },
    ],
    ["Type=inline,MODE=min", { type: "inline" }],
    // mounts= is read as Go's ParseBool reads it (as ignore-error=), and kept only when true.
    [
      "type=registry,ref=r/c,mode=max,mounts=true",
      { type: "registry", ref: "r/c", mode: "max", mounts: true },
    ],
    ["type=local,dest=d,mounts=1", { type: "local", dest: "/w/d", mode: "min", mounts: true }],
    ["type=local,dest=d,mounts=False", { type: "local", dest: "/w/d", mode: "min" }],
    ["type=inline,mounts=false", { type: "inline" }],
  ])("%s", (spec, expected) => {
    expect(parseCacheExportSpec(spec, "/w")).toEqual(expected);
  });

  it.each([
    [
      "type=local,dest=d,bogus=true",
      "type=local takes no bogus= (it takes dest=, tag=, mode=, ignore-error=, mounts=",
    ],
    ["type=registry,ref=r,bogus=1", "type=registry takes no bogus= (it takes ref=, mode=,"],
    ["type=inline,src=x", "type=inline takes no src= (it takes mode=, mounts=)"],
    ["type=inline,mounts=true", "inline cache rides in the image config and cannot carry cache mounts"],
    ["type=registry,ref=r,mounts=yes", 'mounts must be true or false, not "yes"'],
    ["type=registry,ref=r,ref=s", "ref is given twice"],
    ["type=registry,ref=r,ignore-error=maybe", 'ignore-error must be true or false, not "maybe"'],
    [
      `type=registry,ref=r/c@sha256:${"a".repeat(64)}`,
      "a registry cache is written under a tag, not a digest (ref=REPOSITORY:TAG)",
    ],
    [
      "type=registry,ref=r/c:main--tbuild-cache-0123456789abcdef",
      'tags holding "--tbuild-cache-" name the caches of single writers',
    ],
  ])("refuses %s with a usage error", (spec, message) => {
    const error = errorOf(() => parseCacheExportSpec(spec, "/w"));
    expect(error).toBeInstanceOf(UsageError);
    expect(error.exitCode).toBe(2);
    expect(error.message).toContain(message);
  });

  it.each([
    ["type=local,dest=d,compression=zstd", "--cache-to compression=zstd is not supported yet"],
    ["type=local,dest=d,oci-mediatypes=false", "--cache-to oci-mediatypes=false is not supported yet"],
    ["type=local,dest=d,force-compression=true", "--cache-to force-compression=true is not supported yet"],
    [
      "type=gha",
      '--cache-to "type=gha": type must be registry, local, inline (others are not supported yet)',
    ],
  ])("refuses %s as not supported yet", (spec, message) => {
    const error = errorOf(() => parseCacheExportSpec(spec, "/w"));
    expect(error).not.toBeInstanceOf(UsageError);
    expect(error.code).toBe("E_NOT_SUPPORTED");
    expect(error.message).toBe(message);
  });
});

describe("--cache-from", () => {
  it.each([
    ["r.example/app:1", { type: "registry", ref: "r.example/app:1" }],
    ["type=local,src=c,tag=v1", { type: "local", src: "/w/c", tag: "v1" }],
    [
      `type=local,src=c,digest=sha256:${"a".repeat(64)}`,
      { type: "local", src: "/w/c", digest: `sha256:${"a".repeat(64)}` },
    ],
    ["type=registry,ref=r/c,mounts=true", { type: "registry", ref: "r/c", mounts: true }],
    ["type=local,src=c,mounts=T", { type: "local", src: "/w/c", mounts: true }],
    ["type=local,src=c,mounts=0", { type: "local", src: "/w/c" }],
  ])("%s", (spec, expected) => {
    expect(parseCacheImportSpec(spec, "/w")).toEqual(expected);
  });

  it.each([
    ["type=local,src=c,bogus=1", "type=local takes no bogus= (it takes src=, tag=, digest=, mounts=)"],
    ["type=registry,ref=r,mode=max", "type=registry takes no mode= (it takes ref=, mounts=)"],
    [
      "type=registry,ref=r,mounts=on",
      '--cache-from "type=registry,ref=r,mounts=on": mounts must be true or false',
    ],
  ])("refuses %s with a usage error", (spec, message) => {
    const error = errorOf(() => parseCacheImportSpec(spec, "/w"));
    expect(error).toBeInstanceOf(UsageError);
    expect(error.message).toContain(message);
  });
});

describe("mounts in a library BuildRequest's cacheTo and cacheFrom", () => {
  it("accepts true or false where a spec can carry mounts", () => {
    const request = {
      context: ".",
      cacheTo: { type: "registry", ref: "r/c:1", mode: "max", mounts: true },
      cacheFrom: [{ type: "local", src: "/c", mounts: false }],
    } as const;
    expect(checkBuildRequest(request)).toBe(request);
  });

  it.each([
    [{ cacheTo: { type: "registry", ref: "r/c:1", mode: "max", mounts: "yes" } }, '"cacheTo" must be'],
    [{ cacheFrom: [{ type: "registry", ref: "r/c:1", mounts: 1 }] }, '"cacheFrom" must be'],
    [{ cacheTo: { type: "inline", mounts: true } }, 'type "inline" cannot carry cache mounts'],
  ])("refuses %j", (fields, message) => {
    const error = errorOf(() => checkBuildRequest({ context: ".", ...fields }));
    expect(error.code).toBe("E_BAD_REQUEST");
    expect(error.message).toContain(message);
  });
});
