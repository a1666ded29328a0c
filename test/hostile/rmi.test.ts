/**
 * `rmi` and the containers `tbuild run` keeps: as Docker, the last name of an image a kept
 * container was made from is not removed without -f, and the refusal names the container; with
 * -f the name goes and the image stays, so `tbuild commit` can still save the container's work,
 * through any later prune. Before, rmi removed the image and commit could not save the container.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("rmi of an image a kept container needs (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  const ok = (target: string, args: string[]) => {
    const result = world.tbuild(mode, target, args);
    expect(result.status, `tbuild ${args.join(" ")}: ${result.stderr}`).toBe(0);
    return result.stdout;
  };
  const keptContainer = (target: string, name: string, image = "busybox") =>
    ok(target, ["run", "--name", name, image, "sh", "-c", `echo ${name}-work > /work`]);
  const committedWork = (target: string, container: string, image: string) => {
    ok(target, ["commit", container, image]);
    return ok(target, ["run", "--rm", image, "cat", "/work"]);
  };
  const imageNames = (target: string): string[] =>
    JSON.parse(ok(target, ["images", "--format", "json"])).map((i: { repository: string }) => i.repository);

  it("is refused, naming the container, and commit still saves the container after", () => {
    keptContainer(store, "keep");
    const refused = world.tbuild(mode, store, ["rmi", "busybox"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(
      /^ERROR: conflict: unable to remove repository reference "busybox" \(must force\) - container [0-9a-f]{12} \(keep\) is using its referenced image [0-9a-f]{12}: remove the container first \(tbuild rm keep\), or untag it with -f/,
    );
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(imageNames(store)).toContain("busybox");
    expect(committedWork(store, "keep", "saved:1")).toBe("keep-work\n");
  });

  it("is refused by image ID too", () => {
    const id = JSON.parse(ok(store, ["images", "--format", "json"])).find(
      (i: { repository: string }) => i.repository === "busybox",
    ).id as string;
    const refused = world.tbuild(mode, store, ["rmi", id]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(
      new RegExp(
        `^ERROR: conflict: unable to delete ${id} \\(must be forced\\) - image is being used by container [0-9a-f]{12} \\(keep\\)`,
      ),
    );
  });

  it("another name of the same image may go, and the last one goes once the container is removed", () => {
    ok(store, ["tag", "busybox", "other:1"]);
    ok(store, ["rmi", "other:1"]);
    keptContainer(store, "gone");
    ok(store, ["rm", "gone"]);
    ok(store, ["rm", "keep"]);
    ok(store, ["tag", "busybox", "spare:1"]);
    ok(store, ["rmi", "busybox"]);
    ok(store, ["tag", "spare:1", "busybox"]);
    world.expectStoreUsable(mode, store);
  });

  it("with -f, the name goes, the image stays for the container, and commit works after a prune", () => {
    const forced = world.store(mode);
    keptContainer(forced, "forced");
    expect(ok(forced, ["rmi", "-f", "busybox"])).toContain("Untagged: docker.io/library/busybox:latest");
    expect(imageNames(forced)).not.toContain("busybox");
    ok(forced, ["prune"]);
    expect(committedWork(forced, "forced", "saved:2")).toBe("forced-work\n");
  });

  it("a container whose image's name now points at a rebuild keeps its image through a prune", () => {
    const retagged = world.store(mode);
    const build = (text: string) => {
      const ctx = world.context({ Dockerfile: `FROM busybox\nRUN echo ${text} > /version\n` });
      ok(retagged, ["build", "-q", "-t", "app:1", ctx]);
    };
    build("one");
    keptContainer(retagged, "old", "app:1");
    build("two");
    ok(retagged, ["prune"]);
    ok(retagged, ["commit", "old", "old-saved:1"]);
    expect(ok(retagged, ["run", "--rm", "old-saved:1", "cat", "/version", "/work"])).toBe("one\nold-work\n");
  });
});
