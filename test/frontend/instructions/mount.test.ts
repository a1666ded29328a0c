import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { parseMount } from "../../../frontend/instructions/index.js";

const lines = ["FROM alpine", "RUN --mount=type=cache,target=/x true"];
const ctx = { file: "Dockerfile", lines, position: { line: 2, column: 5 } };

function mount(value: string) {
  return parseMount(value, ctx);
}

function mountError(value: string): string {
  try {
    parseMount(value, ctx);
  } catch (error) {
    expect(error).toBeInstanceOf(DockerfileError);
    const { line, column, reason } = error as DockerfileError;
    expect(`${line}:${column}`).toBe("2:5");
    return reason;
  }
  throw new Error(`expected --mount=${value} to be rejected`);
}

describe("--mount=type=bind (the default type)", () => {
  it("is read-only from the build context by default", () => {
    expect(mount("target=/src")).toEqual({ type: "bind", target: "/src", readwrite: false });
    expect(mount("type=bind,target=/src")).toEqual({ type: "bind", target: "/src", readwrite: false });
  });

  it("takes source/src, from, and target/dst/destination", () => {
    const expected = { type: "bind", target: "/out", source: "/app/dist", from: "build", readwrite: false };
    expect(mount("type=bind,from=build,source=/app/dist,target=/out")).toEqual(expected);
    expect(mount("type=bind,from=build,src=/app/dist,dst=/out")).toEqual(expected);
    expect(mount("type=bind,from=build,src=/app/dist,destination=/out")).toEqual(expected);
  });

  it("rw, readwrite, ro and readonly are bare words or booleans", () => {
    expect(mount("target=/s,rw")).toMatchObject({ readwrite: true });
    expect(mount("target=/s,readwrite")).toMatchObject({ readwrite: true });
    expect(mount("target=/s,rw=true")).toMatchObject({ readwrite: true });
    expect(mount("target=/s,readwrite=1")).toMatchObject({ readwrite: true });
    expect(mount("target=/s,rw,ro")).toMatchObject({ readwrite: false });
    expect(mount("target=/s,readonly=false")).toMatchObject({ readwrite: true });
    expect(mountError("target=/s,rw=yes")).toBe("invalid value for rw: yes");
  });

  it("keys and the type are case-insensitive", () => {
    expect(mount("Type=BIND,Target=/s,RW")).toEqual({ type: "bind", target: "/s", readwrite: true });
  });

  it("mode, uid and gid are not allowed", () => {
    expect(mountError("target=/s,mode=0644")).toBe('mode not allowed for "bind" type mounts');
    expect(mountError("target=/s,uid=1")).toBe('uid not allowed for "bind" type mounts');
    expect(mountError("target=/s,gid=1")).toBe('gid not allowed for "bind" type mounts');
  });
});

describe("--mount=type=cache", () => {
  it("type=cache,target=/root/.cache,sharing=locked,id=x,uid=1000,gid=1000,mode=0755 gives each option", () => {
    expect(mount("type=cache,target=/root/.cache,sharing=locked,id=x,uid=1000,gid=1000,mode=0755")).toEqual({
      type: "cache",
      target: "/root/.cache",
      id: "x",
      sharing: "locked",
      readonly: false,
      uid: 1000,
      gid: 1000,
      mode: 0o755,
    });
  });

  it("is shared and writable by default, with the target as its id", () => {
    expect(mount("type=cache,target=/root/.npm/")).toEqual({
      type: "cache",
      target: "/root/.npm/",
      id: "/root/.npm",
      sharing: "shared",
      readonly: false,
    });
  });

  it("can be seeded from a stage and be read-only", () => {
    expect(mount("type=cache,target=/c,from=seed,source=/data,ro,sharing=PRIVATE")).toMatchObject({
      from: "seed",
      source: "/data",
      readonly: true,
      sharing: "private",
    });
  });

  it("sharing must be shared, private or locked", () => {
    expect(mountError("type=cache,target=/c,sharing=exclusive")).toBe(
      'unsupported sharing value "exclusive"',
    );
    expect(mountError("type=cache,target=/c,sharing=lock")).toBe(
      'unsupported sharing value "lock" (did you mean locked?)',
    );
  });

  it("mode is octal, uid and gid decimal, each within 32 bits", () => {
    expect(mount("type=cache,target=/c,mode=755")).toMatchObject({ mode: 0o755 });
    expect(mountError("type=cache,target=/c,mode=0789")).toBe(
      "invalid value 0789 for mode (write octal permissions such as 0755)",
    );
    expect(mountError("type=cache,target=/c,uid=-1")).toBe("invalid value -1 for uid");
    expect(mountError("type=cache,target=/c,gid=4294967296")).toBe("invalid value 4294967296 for gid");
  });
});

describe("--mount=type=tmpfs", () => {
  it("takes a size with binary units", () => {
    expect(mount("type=tmpfs,target=/tmp")).toEqual({ type: "tmpfs", target: "/tmp" });
    expect(mount("type=tmpfs,target=/tmp,size=64m")).toEqual({
      type: "tmpfs",
      target: "/tmp",
      size: 64 * 1024 ** 2,
    });
    expect(mount("type=tmpfs,target=/t,size=1.5g")).toMatchObject({ size: 1.5 * 1024 ** 3 });
    expect(mount("type=tmpfs,target=/t,size=512KiB")).toMatchObject({ size: 512 * 1024 });
    expect(mount("type=tmpfs,target=/t,size=100")).toMatchObject({ size: 100 });
    expect(mountError("type=tmpfs,target=/t,size=lots")).toBe(
      "invalid value for size: lots (write a size such as 64m or 1g)",
    );
  });

  it("size belongs to tmpfs only", () => {
    expect(mountError("type=cache,target=/c,size=1m")).toBe("unexpected key 'size' for mount type 'cache'");
  });

  it("mode is not allowed", () => {
    expect(mountError("type=tmpfs,target=/t,mode=1777")).toBe('mode not allowed for "tmpfs" type mounts');
  });
});

describe("--mount=type=secret", () => {
  it("defaults the target to /run/secrets/<id>", () => {
    expect(mount("type=secret,id=npmrc")).toEqual({
      type: "secret",
      id: "npmrc",
      target: "/run/secrets/npmrc",
      required: false,
    });
  });

  it("defaults the id to the target's base name", () => {
    expect(mount("type=secret,target=/root/.npmrc")).toMatchObject({ id: ".npmrc", target: "/root/.npmrc" });
  });

  it("takes the id from source when given", () => {
    expect(mount("type=secret,source=aws,target=/root/.aws/credentials")).toMatchObject({ id: "aws" });
  });

  it("env makes it an environment variable, and a file only with a target", () => {
    expect(mount("type=secret,id=token,env=GITHUB_TOKEN")).toEqual({
      type: "secret",
      id: "token",
      env: "GITHUB_TOKEN",
      required: false,
    });
    expect(mount("type=secret,id=token,env=TOKEN,target=/t")).toMatchObject({ env: "TOKEN", target: "/t" });
    expect(mountError("type=secret,id=token,env=")).toBe(
      "invalid value for env: name the environment variable (env=TOKEN)",
    );
  });

  it("required, uid, gid and mode", () => {
    expect(mount("type=secret,id=a,required,uid=1,gid=2,mode=0400")).toMatchObject({
      required: true,
      uid: 1,
      gid: 2,
      mode: 0o400,
    });
    expect(mount("type=secret,id=a,required=false")).toMatchObject({ required: false });
  });

  it("required may come before the type", () => {
    expect(mount("required,type=secret,id=a")).toMatchObject({ type: "secret", required: true });
  });

  it("errors: no id/source/target, both source and id, from, sharing", () => {
    expect(mountError("type=secret")).toBe(
      "invalid secret mount. one of source, target required (or give it an id)",
    );
    expect(mountError("type=secret,source=a,id=b")).toBe("both source and id can't be set");
    expect(mountError("type=secret,id=a,from=build")).toBe("secret mount should not have a from");
    expect(mountError("type=secret,id=a,sharing=locked")).toBe("secret mount should not define sharing");
  });
});

describe("--mount=type=ssh", () => {
  it("uses the default agent unless an id is given", () => {
    expect(mount("type=ssh")).toEqual({ type: "ssh", id: "default", required: false });
    expect(mount("type=ssh,id=github,target=/run/ssh.sock,required,mode=0600,uid=1000")).toEqual({
      type: "ssh",
      id: "github",
      target: "/run/ssh.sock",
      required: true,
      mode: 0o600,
      uid: 1000,
    });
  });

  it("takes no source", () => {
    expect(mountError("type=ssh,source=/a")).toBe("ssh does not support source");
  });
});

describe("mount errors", () => {
  it("an unknown type is an error, with a suggestion", () => {
    expect(mountError("type=volume,target=/v")).toBe('unsupported mount type "volume"');
    expect(mountError("type=cahce,target=/v")).toBe('unsupported mount type "cahce" (did you mean cache?)');
  });

  it("an unknown key is an error, with a suggestion", () => {
    expect(mountError("type=cache,target=/c,owner=1")).toBe("unexpected key 'owner' in 'owner=1'");
    expect(mountError("type=cache,taget=/c")).toBe(
      "unexpected key 'taget' in 'taget=/c' (did you mean target?)",
    );
  });

  it("a bare word other than ro/rw/required must be key=value", () => {
    expect(mountError("type=cache,target=/c,private")).toBe(
      "invalid field 'private' must be a key=value pair",
    );
    expect(mountError("type=cache,target=/c,")).toBe("invalid field '' must be a key=value pair");
  });

  it("required belongs to secret and ssh mounts", () => {
    expect(mountError("target=/s,required")).toBe("unexpected key 'required' for mount type 'bind'");
  });

  it("sharing belongs to cache mounts", () => {
    expect(mountError("type=tmpfs,target=/t,sharing=locked")).toBe(
      "invalid cache sharing set for tmpfs mount",
    );
  });

  it("bind, cache and tmpfs mounts need a target other than /", () => {
    expect(mountError("type=cache")).toBe("cache mount needs a target: add target=<path in the container>");
    expect(mountError("source=/a")).toBe("bind mount needs a target: add target=<path in the container>");
    expect(mountError("type=tmpfs,target=")).toBe(
      "tmpfs mount needs a target: add target=<path in the container>",
    );
    expect(mountError("type=bind,target=//")).toBe('invalid mount target "//"');
    expect(mount("type=bind,target=relative/dir")).toMatchObject({ target: "relative/dir" });
  });

  it("an empty value is an error", () => {
    expect(mountError("")).toBe(
      "failed to parse --mount as CSV: the value is empty (write e.g. type=cache,target=/root/.cache)",
    );
  });

  it("the error shows the RUN line with a caret under --mount", () => {
    try {
      mount("type=cache");
    } catch (error) {
      expect((error as Error).message).toBe(
        [
          "Dockerfile:2:5: cache mount needs a target: add target=<path in the container>",
          " 2 | RUN --mount=type=cache,target=/x true",
          "   |     ^",
        ].join("\n"),
      );
    }
    expect.assertions(1);
  });
});

describe("mount values are CSV, as encoding/csv reads them", () => {
  it("a quoted field may hold commas, and doubled quotes stand for one", () => {
    expect(mount('type=bind,"source=a,b",target=/s')).toMatchObject({ source: "a,b" });
    expect(mount('type=bind,"source=say ""hi""",target=/s')).toMatchObject({ source: 'say "hi"' });
  });

  it("a stray quote is an error", () => {
    expect(mountError('type=bind,source=a"b,target=/s')).toBe(
      'failed to parse --mount as CSV: bare " in non-quoted-field (column 19)',
    );
    expect(mountError('"type=bind"x,target=/s')).toBe(
      'failed to parse --mount as CSV: extraneous or missing " in quoted-field (column 12)',
    );
    expect(mountError('"type=bind,target=/s')).toBe(
      'failed to parse --mount as CSV: extraneous or missing " in quoted-field (column 1)',
    );
  });
});
