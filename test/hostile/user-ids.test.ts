/**
 * A user id beyond what the rootless user namespace maps (`tbuild run -u 70000`, `USER 70000`):
 * as root it runs; rootless it is an error saying the id is outside the mapped range and how to
 * widen it, instead of runc's "unable to setup user: invalid argument".
 */
import { beforeAll, describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

const OUTSIDE =
  /^ERROR: user "70000": uid 70000 is outside the uids this rootless user namespace maps \(0-65535: your own uid, then the first range of your user in \/etc\/subuid\); use an id in that range, or widen that range in \/etc\/subuid and \/etc\/subgid to at least 70000 ids$/m;

describe.each(MODES)("user ids beyond the mapped range (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  it("tbuild run -u 70000", () => {
    const result = world.tbuild(mode, store, ["run", "--rm", "-u", "70000", "busybox", "id", "-u"]);
    if (mode === "root") {
      expect(result.status, result.stderr).toBe(0);
      expect(result.stdout).toBe("70000\n");
      return;
    }
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(OUTSIDE);
    expect(result.stderr).not.toContain("runc");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("tbuild run -u 0:70000 names the gid and /etc/subgid", () => {
    const result = world.tbuild(mode, store, ["run", "--rm", "-u", "0:70000", "busybox", "id", "-g"]);
    if (mode === "root") {
      expect(result.stdout).toBe("70000\n");
      return;
    }
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('ERROR: user "0:70000": gid 70000 is outside the gids');
    expect(result.stderr).toContain("/etc/subgid");
  });

  it("a RUN step under USER 70000", () => {
    const ctx = world.context({ Dockerfile: "FROM busybox\nUSER 70000\nRUN id -u > /tmp/uid\n" });
    const result = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "high-uid:1", ctx]);
    if (mode === "root") {
      expect(result.status, result.stderr).toBe(0);
      return;
    }
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(OUTSIDE);
    expect(result.stderr).toContain(">>> RUN id -u > /tmp/uid");
    expect(result.stderr).not.toContain("unable to setup user");
  });

  it("the store is usable after", () => {
    world.expectStoreUsable(mode, store);
  });
});
