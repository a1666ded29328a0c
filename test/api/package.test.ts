/**
 * tbuild as an npm package: the tarball `npm pack` makes, installed into an empty project, works
 * as docs/api.md says. Each `ts example` block of docs/api.md is written into that project and
 * run with Node (which strips the types), against a local registry and a store holding busybox;
 * and the examples are type-checked with `tsc --noEmit` (strict, no skipLibCheck) under
 * TypeScript 5 and under the current major (the project's own compiler), so that the package's
 * .d.ts files stand on their own.
 *
 * The install prefers npm's cache (`--prefer-offline`); `--ignore-scripts` skips the `node`
 * package's download of a Node binary, which the library does not need (it runs on the caller's).
 */
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const exec = promisify(execFile);
const tempDir = tempDirs();
const docs = readFileSync(path.join(projectRoot, "docs", "api.md"), "utf8");
const examples = [...docs.matchAll(/```ts example\n([\s\S]*?)```/g)].map((m) => m[1]!);

let registry: RunningRegistry;
let project: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  registry = await startRegistry();
  const store = tempDir("api-store");
  await importBusybox(store, "busybox");
  env = { ...process.env, TBUILD_ROOT: store, REGISTRY: registry.host };

  const packed = tempDir("api-pack");
  await exec("npm", ["pack", "--ignore-scripts", "--pack-destination", packed], { cwd: projectRoot });
  const tarball = path.join(packed, readdirSync(packed).find((f) => f.endsWith(".tgz"))!);
  project = tempDir("api-project");
  writeFileSync(
    path.join(project, "package.json"),
    `${JSON.stringify({ name: "uses-tbuild", private: true, type: "module" })}\n`,
  );
  const typesNode = JSON.parse(
    readFileSync(path.join(projectRoot, "node_modules/@types/node/package.json"), "utf8"),
  ).version as string;
  await exec(
    "npm",
    [
      "install",
      "--prefer-offline",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      tarball,
      "typescript@5",
      `@types/node@${typesNode}`,
    ],
    { cwd: project, env: { ...process.env, npm_config_loglevel: "error" } },
  );
  writeFileSync(
    path.join(project, "tsconfig.json"),
    `${JSON.stringify({
      compilerOptions: {
        module: "nodenext",
        moduleResolution: "nodenext",
        target: "es2024",
        types: ["node"],
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        allowImportingTsExtensions: true,
      },
      include: ["*.ts"],
    })}\n`,
  );
  for (const [i, code] of examples.entries()) {
    writeFileSync(path.join(project, `example-${i + 1}.ts`), code);
  }
}, 180_000);

afterAll(async () => {
  await registry?.stop();
});

describe("the npm package, installed into an empty project", () => {
  it("has the examples docs/api.md promises", () => {
    expect(examples.length).toBeGreaterThanOrEqual(3);
    expect(examples[0]).toMatch(
      /import \{[^}]*\bbuild\b[^}]*\bpull\b[^}]*\bpush\b[^}]*\brun\b[^}]*\} from "tbuild"/,
    );
  });

  it.each([
    ["TypeScript 5", () => path.join(project, "node_modules", "typescript", "bin", "tsc")],
    ["the current TypeScript", () => path.join(projectRoot, "node_modules", "typescript", "bin", "tsc")],
  ])("type-checks the examples under %s (strict, no skipLibCheck)", async (_, tsc) => {
    const version = (await exec(process.execPath, [tsc(), "--version"], { cwd: project })).stdout;
    expect(version).toMatch(/Version \d+\./);
    const result = await exec(process.execPath, [tsc(), "-p", "."], { cwd: project }).catch(
      (err: { stdout: string; stderr: string; code: number }) => err,
    );
    expect(`${result.stdout}${result.stderr}`).toBe("");
  });

  it("builds, pushes to the registry, pulls and runs an image (the first example)", async () => {
    const { stdout } = await exec(process.execPath, ["example-1.ts"], { cwd: project, env });
    const built = /^built (sha256:[0-9a-f]{64}): .*RUN echo "version 1" > \/version$/m.exec(stdout);
    expect(built, stdout).not.toBeNull();
    // What the registry gives back is the image built and pushed.
    expect(stdout).toContain(`pulled ${built![1]}\n`);
    // The container's own output, from the image pulled back from the registry.
    expect(stdout).toMatch(/^version 1$/m);
    const tags = await fetch(`http://${registry.host}/v2/app/tags/list`).then((r) => r.json());
    expect(tags).toEqual({ name: "app", tags: ["1"] });
  });

  it("cancels a build with an AbortSignal, rejecting with a TbuildError of code E_CANCELED", async () => {
    const { stdout } = await exec(process.execPath, ["example-2.ts"], { cwd: project, env });
    expect(stdout).toMatch(/^E_CANCELED: /m);
  });

  it("lists the store's images", async () => {
    const { stdout } = await exec(process.execPath, ["example-3.ts"], { cwd: project, env });
    expect(stdout).toMatch(/^docker\.io\/library\/busybox:latest sha256:[0-9a-f]{64}$/m);
  });
});
