/**
 * `--progress=quiet` / `-q`: nothing while the build runs, the image ID alone on stdout at the end
 * (so `id=$(tbuild build -q .)` works); warnings and a failed step's report still go to stderr.
 */
import type { BuildEvent } from "../../build/events.js";
import { formatStepFailure } from "./failure.js";
import type { ProgressSink } from "./sink.js";

export class QuietProgress implements ProgressSink {
  readonly reportsErrors = false;
  private readonly stdout: NodeJS.WritableStream;
  private readonly stderr: NodeJS.WritableStream;

  constructor(stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream) {
    this.stdout = stdout;
    this.stderr = stderr;
  }

  handle(event: BuildEvent): void {
    switch (event.type) {
      case "warning":
        this.stderr.write(`WARNING: ${event.message}\n`);
        return;
      case "build.completed":
        this.stdout.write(`${event.digest}\n`);
        return;
      case "build.failed":
        if (event.name !== undefined) this.stderr.write(formatStepFailure(event));
        return;
      case "explain":
        this.stderr.write(`explain: ${event.name}: ${event.reason}\n`);
        return;
    }
  }
}
