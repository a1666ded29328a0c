/**
 * USER resolved against the image's /etc/passwd and /etc/group as Docker resolves it.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveUser, SandboxError } from "../../../worker/sandbox/index.js";
import { checkUserMapped } from "../../../worker/sandbox/user.js";

const images: string[] = [];

function image(files: Record<string, string>): string {
  const rootfs = mkdtempSync(path.join(tmpdir(), "tbuild-user-"));
  images.push(rootfs);
  mkdirSync(path.join(rootfs, "etc"));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(rootfs, name), text);
  return rootfs;
}

afterAll(() => {
  for (const rootfs of images) rmSync(rootfs, { recursive: true, force: true });
});

const passwd = [
  "root:x:0:0:root:/root:/bin/sh",
  "# a comment",
  "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
  "app:x:1000:1000:App:/home/app:/bin/sh",
  "_apt:x:42:65534::/nonexistent:/usr/sbin/nologin",
  "",
].join("\n");
const group = [
  "root:x:0:",
  "daemon:x:1:",
  "app:x:1000:",
  "audio:x:29:app",
  "video:x:44:other,app",
  "staff:x:50:other",
  "nogroup:x:65534:",
  "",
].join("\n");
const debianLike = image({ "etc/passwd": passwd, "etc/group": group });

describe("resolveUser", () => {
  it("resolves no user as root, with its home", async () => {
    expect(await resolveUser(debianLike, "")).toEqual({ uid: 0, gid: 0, additionalGids: [], home: "/root" });
  });

  it("resolves a name to its uid, primary gid and home, with supplementary groups from /etc/group", async () => {
    expect(await resolveUser(debianLike, "app")).toEqual({
      uid: 1000,
      gid: 1000,
      additionalGids: [29, 44],
      home: "/home/app",
    });
    expect(await resolveUser(debianLike, "_apt")).toEqual({
      uid: 42,
      gid: 65534,
      additionalGids: [],
      home: "/nonexistent",
    });
  });

  it("resolves a uid found in passwd like its name", async () => {
    expect(await resolveUser(debianLike, "1000")).toEqual(await resolveUser(debianLike, "app"));
  });

  it("uses a uid missing from passwd as is, with gid 0 and no home", async () => {
    expect(await resolveUser(debianLike, "4321")).toEqual({ uid: 4321, gid: 0, additionalGids: [] });
  });

  it("takes an explicit group by name or number, and then no supplementary groups", async () => {
    expect(await resolveUser(debianLike, "app:staff")).toEqual({
      uid: 1000,
      gid: 50,
      additionalGids: [],
      home: "/home/app",
    });
    expect(await resolveUser(debianLike, "1000:44")).toMatchObject({
      uid: 1000,
      gid: 44,
      additionalGids: [],
    });
    expect(await resolveUser(debianLike, "4321:8765")).toEqual({ uid: 4321, gid: 8765, additionalGids: [] });
  });

  it("names a user missing from passwd in its error", async () => {
    await expect(resolveUser(debianLike, "nosuchuser")).rejects.toThrow(SandboxError);
    await expect(resolveUser(debianLike, "nosuchuser")).rejects.toThrow(/unable to find user nosuchuser/);
  });

  it("names a group missing from /etc/group in its error", async () => {
    await expect(resolveUser(debianLike, "app:nosuchgroup")).rejects.toThrow(
      /unable to find group nosuchgroup/,
    );
  });

  it("rejects a malformed user", async () => {
    for (const user of ["a:b:c", ":staff", "app:"]) {
      await expect(resolveUser(debianLike, user), user).rejects.toThrow(/invalid user/);
    }
  });

  it("works without /etc/passwd and /etc/group for numeric ids only", async () => {
    const bare = image({});
    expect(await resolveUser(bare, "")).toEqual({ uid: 0, gid: 0, additionalGids: [] });
    expect(await resolveUser(bare, "1000:1000")).toEqual({ uid: 1000, gid: 1000, additionalGids: [] });
    await expect(resolveUser(bare, "app")).rejects.toThrow(
      /unable to find user app: the image has no \/etc\/passwd/,
    );
    await expect(resolveUser(bare, "0:staff")).rejects.toThrow(/unable to find group staff/);
  });

  it("reads the image's files, never the host's, through symlinks the image planted", async () => {
    // An absolute link in an image points into the image: this one must find the image's file
    // under /data, never the host's /etc/passwd (which has no "imageonly" user).
    const linked = image({});
    mkdirSync(path.join(linked, "data"));
    writeFileSync(path.join(linked, "data/passwd"), "imageonly:x:777:777::/home/imageonly:/bin/sh\n");
    symlinkSync("/data/passwd", path.join(linked, "etc/passwd"));
    expect(await resolveUser(linked, "imageonly")).toEqual({
      uid: 777,
      gid: 777,
      additionalGids: [],
      home: "/home/imageonly",
    });
    // A relative link climbs to the image's root and stops there: this /etc/group names itself,
    // a loop, where the host's /etc/group (which has "root") would have been found.
    const climbing = image({});
    symlinkSync("../../../../../../etc/group", path.join(climbing, "etc/group"));
    await expect(resolveUser(climbing, "0:root")).rejects.toThrow(/too many levels of symbolic links/);
  });
});

describe("ids a rootless user namespace maps", () => {
  // tbuild's namespace: the user as 0, then a 65535-id subordinate range.
  const maps = {
    uid: [
      { inside: 0, outside: 1001, count: 1 },
      { inside: 1, outside: 100000, count: 65535 },
    ],
    gid: [
      { inside: 0, outside: 1001, count: 1 },
      { inside: 1, outside: 100000, count: 65535 },
    ],
  };

  it("an id in the range passes", () => {
    expect(() =>
      checkUserMapped({ uid: 65535, gid: 0, additionalGids: [65534] }, "65535", maps),
    ).not.toThrow();
  });

  it.each([
    [
      { uid: 70000, gid: 0, additionalGids: [] },
      "70000",
      'user "70000": uid 70000 is outside the uids this rootless user namespace maps (0-65535: your own uid, then the first range of your user in /etc/subuid)',
    ],
    [
      { uid: 0, gid: 65536, additionalGids: [] },
      "0:65536",
      'user "0:65536": gid 65536 is outside the gids this rootless user namespace maps (0-65535: your own gid, then the first range of your user in /etc/subgid)',
    ],
    [{ uid: 1000, gid: 1000, additionalGids: [90000] }, "app", 'user "app": gid 90000 is outside'],
  ])("an id outside it is an error saying so and how to widen it (%j)", (ids, user, message) => {
    let error: unknown;
    try {
      checkUserMapped(ids, user, maps);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(SandboxError);
    expect((error as Error).message).toContain(message);
    expect((error as Error).message).toMatch(
      /widen that range in \/etc\/subuid and \/etc\/subgid to at least \d+ ids$/,
    );
  });
});
