import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Two test files at once on a 2-core machine: most of a test's time is tbuild, runc and the
    // registry working or waiting in other processes, so the suite took 575 s instead of 994 s
    // (both runs green, when it was measured; it has grown since: 1,660 s on 2026-12-07). The
    // tests wait for events, never for time, so a busy machine only slows them.
    maxWorkers: 2,
    globalSetup: ["./test/helpers/stage-checkout.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["default", "./test/helpers/summary-reporter.ts"],
  },
});
