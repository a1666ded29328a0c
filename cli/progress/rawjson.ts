/**
 * `--progress=rawjson`: one JSON object per line on stderr, nothing else, so a program can follow
 * the build: each BuildEvent (build/events.ts) as the build sends it, which are the objects the
 * library's `onEvent` receives.
 */
import type { BuildEvent } from "../../build/events.js";
import type { ProgressSink } from "./sink.js";

export class RawJsonProgress implements ProgressSink {
  readonly reportsErrors = true;
  private readonly out: NodeJS.WritableStream;

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
  }

  handle(event: BuildEvent): void {
    this.out.write(`${JSON.stringify(event)}\n`);
  }
}
