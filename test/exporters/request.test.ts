import { describe, expect, it } from "vitest";
import { TbuildError, UsageError } from "../../errors/index.js";
import { parseOutputSpec } from "../../exporters/index.js";

describe("parseOutputSpec reads -o as buildx does", () => {
  it.each([
    ["type=oci,dest=out.tar", { type: "oci", dest: "out.tar" }],
    ["type=oci,dest=layout,tar=false", { type: "oci", dest: "layout", tar: false }],
    [
      "type=docker,dest=img.tar,name=example.com/a:1",
      { type: "docker", dest: "img.tar", names: ["example.com/a:1"] },
    ],
    ["type=local,dest=dir", { type: "local", dest: "dir" }],
    ["dest=dir", { type: "local", dest: "dir" }],
    ["out/dir", { type: "local", dest: "out/dir" }],
    ["-", { type: "tar", dest: "-" }],
    ["type=tar,dest=-", { type: "tar", dest: "-" }],
    ["type=tar,dest=fs.tar", { type: "tar", dest: "fs.tar" }],
    ["type=image,name=a:1,push=true", { type: "image", names: ["a:1"], push: true }],
    ["type=registry,name=a:1", { type: "image", names: ["a:1"], push: true }],
    ['type=image,"name=a:1,b:2"', { type: "image", names: ["a:1", "b:2"] }],
    [
      "type=oci,dest=o.tar,compression=zstd,compression-level=19,force-compression=true,oci-mediatypes=false",
      {
        type: "oci",
        dest: "o.tar",
        compression: "zstd",
        compressionLevel: 19,
        forceCompression: true,
        ociMediaTypes: false,
      },
    ],
    [
      "type=image,compression=uncompressed,push=false",
      { type: "image", compression: "uncompressed", push: false },
    ],
    ["Type=oci,DEST=x.tar", { type: "oci", dest: "x.tar" }],
  ])("%s", (spec, expected) => {
    expect(parseOutputSpec(spec)).toEqual(expected);
  });

  it.each([
    ["", /--output is empty/],
    ["type=oci,dest", /"dest" is not key=value/],
    ["name=a", /has no type=/],
    ["type=nope", /unknown type "nope": use image, registry, oci, docker, tar or local/],
    ["type=local", /type=local needs dest=DIRECTORY/],
    ["type=local,dest=-", /for a tar on standard output use type=tar,dest=-/],
    ["type=tar,dest=x,compression=gzip", /type=tar takes no compression= \(it takes dest=\)/],
    ["type=oci,dest=x,compression=brotli", /compression must be gzip, zstd or uncompressed, not "brotli"/],
    [
      "type=oci,dest=x,compression=gzip,compression-level=12",
      /compression-level for gzip must be from 0 to 9, not 12/,
    ],
    ["type=oci,dest=x,compression=zstd,compression-level=fast", /compression-level must be a whole number/],
    ["type=oci,dest=x,compression=uncompressed,compression-level=1", /does not apply to uncompressed/],
    ["type=oci,dest=x,push=maybe", /type=oci takes no push=/],
    ["type=image,push=maybe", /push must be true or false, not "maybe"/],
    ["type=oci,dest=-,tar=false", /tar=false writes a directory/],
    ["type=oci,dest=a,dest=b", /dest is given twice/],
    ['type=image,"name=a', /a quote is not closed/],
    [`type=image,name=a:1@sha256:${"0".repeat(64)}`, /name=a:1@sha256:0+: a digest is not a tag/],
    ["type=oci,dest=x,bogus=1", /type=oci takes no bogus= \(it takes dest=, name=, tar=/],
    ["type=tar,dest=x,mounts=true", /type=tar takes no mounts= \(it takes dest=\)/],
  ])("refuses %j with a usage error", (spec, message) => {
    let error: unknown;
    try {
      parseOutputSpec(spec);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toMatch(message);
  });

  it.each([
    ["type=image,name=a,push-by-digest=true", "--output push-by-digest= is not supported yet"],
    [
      "type=image,name=a,annotation.org.opencontainers.image.title=x",
      "--output annotation.org.opencontainers.image.title= is not supported yet",
    ],
    ["type=oci,dest=x,compression=estargz", "--output compression=estargz is not supported yet"],
    ["type=cacheonly", "--output type=cacheonly is not supported yet"],
  ])("refuses %j as not supported yet, never ignoring it", (spec, message) => {
    let error: unknown;
    try {
      parseOutputSpec(spec);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(TbuildError);
    expect(error).not.toBeInstanceOf(UsageError);
    expect((error as TbuildError).code).toBe("E_NOT_SUPPORTED");
    expect((error as Error).message).toBe(message);
  });
});
