// Bundles tbuild's compiled modules (dist/) into a few files under dist/bundle/cli/, which
// bin/tbuild runs: Node then loads a handful of modules instead of some two hundred, which takes
// tens of milliseconds off every command. Packages stay outside (node_modules). Every file lands
// three directories below the package root, as dist/cli/commands/*.js do, so that paths made
// relative to import.meta.url (the package root, the seccomp profile) resolve the same.
import { build } from "esbuild";

await build({
  entryPoints: { main: "dist/cli/main.js" },
  outdir: "dist/bundle/cli",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node24",
  packages: "external",
  chunkNames: "[name]-[hash]",
  logLevel: "warning",
});
