/**
 * A detached container's log, in docker's json-file format: one JSON object per line,
 * `{"log":"text\n","stream":"stdout","time":"..."}`. (Interim writer; the full one, size-capped
 * and rotated, with `tbuild logs`, replaces it.)
 */
import { closeSync, openSync, writeSync } from "node:fs";

export class LogWriter {
  private readonly fd: number;
  private readonly partial: Record<"stdout" | "stderr", string> = { stdout: "", stderr: "" };

  constructor(file: string) {
    this.fd = openSync(file, "a", 0o640);
  }

  write(stream: "stdout" | "stderr", chunk: Buffer): void {
    const text = this.partial[stream] + chunk.toString("utf8");
    const lines = text.split("\n");
    this.partial[stream] = lines.pop() ?? "";
    for (const line of lines) this.entry(stream, `${line}\n`);
  }

  end(stream: "stdout" | "stderr"): void {
    if (this.partial[stream]) this.entry(stream, this.partial[stream]);
    this.partial[stream] = "";
  }

  close(): void {
    this.end("stdout");
    this.end("stderr");
    closeSync(this.fd);
  }

  private entry(stream: string, log: string): void {
    writeSync(this.fd, `${JSON.stringify({ log, stream, time: new Date().toISOString() })}\n`);
  }
}
