/**
 * A step that reads a build result (`COPY --from` a stage or an image, `RUN --mount=from=STAGE`)
 * is keyed, once that result exists, on exactly the files it reads of it: a builder stage that
 * ran again but produced the same binary leaves the final stage's COPY and everything after it
 * cached, and the image is the same; a changed binary runs them again. As root and rootless.
 */
import { readFileSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode } from "../hostile/harness.js";

const world = hostileWorld();

interface Built {
  ran: string[];
  cached: string[];
  explained: string[];
  digest: string;
}

/** Builds `ctx` in `store`; which steps ran and which were cached (by their text), and the image. */
function build(mode: Mode, store: string, ctx: string, env: Record<string, string> = {}): Built {
  const out = world.dir("out", mode);
  const iid = path.join(out, "iid");
  const result = world.tbuild(
    mode,
    store,
    ["build", "--progress=plain", "--explain", "--iidfile", iid, ctx],
    {
      env,
    },
  );
  expect(result.status, result.stderr).toBe(0);
  const names = new Map<string, string>();
  const ran: string[] = [];
  const cached: string[] = [];
  for (const line of result.stderr.split("\n")) {
    const named = /^#(\d+) \[(?!internal\])[^\]]+\] (.*)$/.exec(line);
    if (named) names.set(named[1]!, named[2]!);
    const done = /^#(\d+) (DONE|CACHED)/.exec(line);
    const name = done ? names.get(done[1]!) : undefined;
    if (name !== undefined) (done![2] === "DONE" ? ran : cached).push(name);
  }
  const explained = result.stderr.split("\n").filter((l) => l.startsWith("explain: "));
  return { ran, cached, explained, digest: readFileSync(iid, "utf8").trim() };
}

const BUILDER = [
  "FROM busybox AS build",
  "COPY src/ /src",
  "RUN mkdir -p /out && cat /src/a > /out/app",
  "",
  "FROM busybox",
];

describe.each(MODES)("a step reading another stage is keyed on the files it reads (%s)", (mode) => {
  it("COPY --from=build stays cached when the stage ran again with the same /out/app", () => {
    const ctx = world.context(
      {
        Dockerfile: [
          ...BUILDER,
          "COPY --from=build /out/app /app",
          "RUN cat /proc/sys/kernel/random/uuid > /stamp",
          "",
        ].join("\n"),
        "src/a": "a1\n",
        "src/b": "b1\n",
      },
      mode,
    );
    const store = world.store(mode);
    const first = build(mode, store, ctx);

    writeFileSync(path.join(ctx, "src/b"), "b2\n");
    const sameApp = build(mode, store, ctx);
    expect(sameApp.ran).toEqual(["COPY src/ /src", "RUN mkdir -p /out && cat /src/a > /out/app"]);
    expect(sameApp.cached).toEqual(
      expect.arrayContaining([
        "COPY --from=build /out/app /app",
        "RUN cat /proc/sys/kernel/random/uuid > /stamp",
      ]),
    );
    expect(sameApp.digest).toBe(first.digest);
    expect(sameApp.explained).toContain(
      "explain: [stage-1 2/3] COPY --from=build /out/app /app: cached by content: " +
        "[build 3/3] RUN mkdir -p /out && cat /src/a > /out/app changed, but not in the files this step reads of it",
    );

    writeFileSync(path.join(ctx, "src/a"), "a2\n");
    const newApp = build(mode, store, ctx);
    expect(newApp.ran).toEqual([
      "COPY src/ /src",
      "RUN mkdir -p /out && cat /src/a > /out/app",
      "COPY --from=build /out/app /app",
      "RUN cat /proc/sys/kernel/random/uuid > /stamp",
    ]);
    expect(newApp.digest).not.toBe(first.digest);

    // --no-cache still runs everything.
    const forced = world.tbuild(mode, store, ["build", "--progress=plain", "--no-cache", ctx]);
    expect(forced.status, forced.stderr).toBe(0);
    expect(forced.stderr).not.toContain("CACHED");
  });

  it("RUN --mount=from=build,source=/out stays cached when the stage ran again with the same /out", () => {
    const ctx = world.context(
      {
        Dockerfile: [
          ...BUILDER,
          "RUN --mount=from=build,source=/out,target=/m cp /m/app /app && cat /proc/sys/kernel/random/uuid > /stamp",
          "",
        ].join("\n"),
        "src/a": "a1\n",
        "src/b": "b1\n",
      },
      mode,
    );
    const store = world.store(mode);
    const first = build(mode, store, ctx);
    const step =
      "RUN --mount=from=build,source=/out,target=/m cp /m/app /app && cat /proc/sys/kernel/random/uuid > /stamp";

    writeFileSync(path.join(ctx, "src/b"), "b2\n");
    const sameOut = build(mode, store, ctx);
    expect(sameOut.ran).toEqual(["COPY src/ /src", "RUN mkdir -p /out && cat /src/a > /out/app"]);
    expect(sameOut.cached).toContain(step);
    expect(sameOut.digest).toBe(first.digest);

    writeFileSync(path.join(ctx, "src/a"), "a2\n");
    const newOut = build(mode, store, ctx);
    expect(newOut.ran).toContain(step);
    expect(newOut.digest).not.toBe(first.digest);
  });

  it("a copy keeps mtimes: the same bytes with another mtime run it again, unless SOURCE_DATE_EPOCH clamps both", () => {
    const ctx = world.context(
      {
        Dockerfile: [
          "FROM busybox AS build",
          "COPY src/ /src",
          'RUN mkdir -p /out && cat /src/a > /out/app && touch -d "@$(cat /src/t)" /out/app',
          "",
          "FROM busybox",
          "COPY --from=build /src/a /a",
          "COPY --from=build /out/app /app",
          "",
        ].join("\n"),
        "src/a": "a1\n",
        "src/t": "1262304000\n",
      },
      mode,
    );
    const setTime = (seconds: number) => writeFileSync(path.join(ctx, "src/t"), `${seconds}\n`);
    // Both times are after SOURCE_DATE_EPOCH: the layers hold it instead, so the copy is the same.
    const clampedStore = world.store(mode);
    const clamped = build(mode, clampedStore, ctx);
    setTime(1293840000);
    const clampedAgain = build(mode, clampedStore, ctx);
    expect(clampedAgain.ran).toEqual([
      "COPY src/ /src",
      'RUN mkdir -p /out && cat /src/a > /out/app && touch -d "@$(cat /src/t)" /out/app',
    ]);
    expect(clampedAgain.digest).toBe(clamped.digest);

    // Without it, /app would keep the new mtime: the copy runs, /a (copied unchanged) stays cached.
    const noEpoch = { SOURCE_DATE_EPOCH: "" };
    const keptStore = world.store(mode);
    setTime(1262304000);
    const kept = build(mode, keptStore, ctx, noEpoch);
    setTime(1293840000);
    const keptAgain = build(mode, keptStore, ctx, noEpoch);
    expect(keptAgain.cached).toContain("COPY --from=build /src/a /a");
    expect(keptAgain.ran).toContain("COPY --from=build /out/app /app");
    expect(keptAgain.digest).not.toBe(kept.digest);
  });
});

describe.each(MODES)("COPY --from an image is keyed on the files it copies (%s)", (mode) => {
  it("a new image whose copied file is the same leaves the COPY cached", () => {
    const store = world.store(mode);
    const rootfs = world.dir("tools-rootfs", mode);
    const fixed = new Date("1990-01-01T00:00:00Z");
    const importTools = (other: string) => {
      writeFileSync(path.join(rootfs, "tool"), "tool v1\n");
      writeFileSync(path.join(rootfs, "other"), other);
      for (const name of ["tool", "other", "."]) utimesSync(path.join(rootfs, name), fixed, fixed);
      const imported = world.tbuild(mode, store, ["import", rootfs, "tools:latest"]);
      expect(imported.status, imported.stderr).toBe(0);
    };
    importTools("other v1\n");
    const ctx = world.context(
      {
        Dockerfile:
          "FROM busybox\nCOPY --from=tools:latest /tool /tool\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n",
      },
      mode,
    );
    const first = build(mode, store, ctx);
    expect(first.ran).toContain("COPY --from=tools:latest /tool /tool");

    importTools("other v2\n");
    const otherChanged = build(mode, store, ctx);
    expect(otherChanged.cached).toEqual(
      expect.arrayContaining([
        "COPY --from=tools:latest /tool /tool",
        "RUN cat /proc/sys/kernel/random/uuid > /stamp",
      ]),
    );
    expect(otherChanged.ran).toEqual([]);
    expect(otherChanged.digest).toBe(first.digest);
  });
});
