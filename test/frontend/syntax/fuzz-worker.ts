/**
 * Runs the parser fuzzing in a worker thread, so that the test (fuzz.test.ts) can stop a case that
 * never returns: it posts each input before parsing it, then "done" or "failed". It uses the built
 * parser (dist/, which `npm test` builds first), because Node runs this file by stripping types and
 * cannot resolve the sources' `.js` imports to `.ts` files.
 */
import { readdirSync, readFileSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import fc from "fast-check";
import type * as Errors from "../../../frontend/errors.js";
import type * as Syntax from "../../../frontend/syntax/index.js";

const dist = new URL("../../../dist/frontend/", import.meta.url);
const { dumpAst, parseDockerfile }: typeof Syntax = await import(new URL("syntax/index.js", dist).href);
const { DockerfileError }: typeof Errors = await import(new URL("errors.js", dist).href);

const runs = (workerData as { runs: number }).runs;
const port = parentPort!;

const fixtureDir = new URL("../../fixtures/buildkit-parser/", import.meta.url);
const fixtures: string[] = [];
for (const group of ["testfiles", "testfiles-negative"]) {
  const dir = new URL(`${group}/`, fixtureDir);
  for (const name of readdirSync(dir))
    fixtures.push(readFileSync(new URL(`${name}/Dockerfile`, dir), "utf8"));
}

/** The parser returns a tree, or throws a DockerfileError with a position; nothing else. */
function parsesOrRejectsWithPosition(input: string | Uint8Array): void {
  port.postMessage(typeof input === "string" ? input : `bytes: ${Buffer.from(input).toString("hex")}`);
  try {
    dumpAst(parseDockerfile(input));
  } catch (err) {
    if (!(err instanceof DockerfileError))
      throw new Error(`threw ${String(err)} instead of a DockerfileError`);
    if (!(err.line >= 1 && err.column >= 1)) throw new Error(`positioned at ${err.line}:${err.column}`);
    if (!err.message.startsWith(`Dockerfile:${err.line}:${err.column}: `))
      throw new Error(`message ${err.message}`);
  }
}

/** Pieces that exercise the parser's corners. */
const piece = fc.oneof(
  fc.constantFrom(
    "\\",
    "`",
    "'",
    '"',
    "<<",
    "<<-",
    "<<'EOF'",
    "3<<EOF",
    "EOF",
    "\n",
    "\r\n",
    "\r",
    "\\\n",
    "`\n",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "--",
    "-- ",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    " ",
    "\t",
    "$",
    "${",
    "${x:-",
    "\u0000",
    "\u00a0",
    "\u0085",
    "\ufeff",
    "é",
    "😀",
    "\udcff",
    '["a", 1]',
    '["a"]',
    "1e400",
  ),
  fc.constantFrom(
    "FROM ",
    "RUN ",
    "CMD ",
    "COPY ",
    "ADD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
  ),
  fc.string({ maxLength: 5 }),
);

const mutation = fc.record({
  kind: fc.constantFrom("insert", "delete", "replace"),
  at: fc.nat(),
  length: fc.nat({ max: 10 }),
  text: piece,
});

type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(text: string, change: Mutation): string {
  const at = change.at % (text.length + 1);
  const removed = change.kind === "insert" ? 0 : change.length;
  const inserted = change.kind === "delete" ? "" : change.text;
  return text.slice(0, at) + inserted + text.slice(at + removed);
}

const mutatedFixture = fc
  .record({
    fixture: fc.constantFrom(...fixtures),
    changes: fc.array(mutation, { minLength: 1, maxLength: 12 }),
  })
  .map(({ fixture, changes }) => changes.reduce(mutate, fixture));

const randomDockerfile = fc.array(piece, { maxLength: 60 }).map((pieces) => pieces.join(""));

const property = (input: fc.Arbitrary<string | Uint8Array>) =>
  fc.property(input, parsesOrRejectsWithPosition);

try {
  fc.assert(property(mutatedFixture), { numRuns: runs });
  fc.assert(property(randomDockerfile), { numRuns: runs });
  fc.assert(property(fc.uint8Array({ maxLength: 300 })), { numRuns: Math.ceil(runs / 4) });
  fc.assert(
    property(
      mutatedFixture.map((text) => Buffer.concat([Buffer.from(text), Buffer.from([0xff, 0xe2, 0x82])])),
    ),
    { numRuns: Math.ceil(runs / 4) },
  );
  port.postMessage({ done: true });
} catch (err) {
  port.postMessage({ failed: (err as Error).message });
}
