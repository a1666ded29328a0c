/**
 * BuildKit's plain progress shape, so log parsers written for `docker buildx build --progress=plain`
 * keep working: `#N [stage i/n] INSTRUCTION`, output lines as `#N 0.123 text`, `#N CACHED`,
 * `#N DONE 1.2s`, `#N ERROR: message`.
 */
import type { SolveEvent } from "../../solver/solve.js";

export class PlainProgress {
  private readonly numbers = new Map<string, number>();
  private readonly started = new Map<string, number>();
  /** A partial output line per vertex and stream, until its newline arrives. */
  private readonly partial = new Map<string, string>();
  private next = 1;

  private readonly out: NodeJS.WritableStream;

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
  }

  /** A step of tbuild's own (reading the Dockerfile, resolving images) shown like a vertex. */
  async internal<T>(name: string, work: () => Promise<T>): Promise<T> {
    const id = `internal:${name}`;
    const n = this.number(id);
    this.write(`#${n} ${name}\n`);
    const start = performance.now();
    try {
      const result = await work();
      this.write(`#${n} DONE ${seconds(performance.now() - start)}\n\n`);
      return result;
    } catch (err) {
      this.write(`#${n} ERROR: ${(err as Error).message.split("\n")[0]}\n\n`);
      throw err;
    }
  }

  handle = (event: SolveEvent): void => {
    const n = this.number(event.digest);
    switch (event.type) {
      case "vertex.cached":
        this.write(`#${n} ${event.info.name}\n#${n} CACHED\n\n`);
        return;
      case "vertex.started":
        this.started.set(event.digest, performance.now());
        this.write(`#${n} ${event.info.name}\n`);
        return;
      case "log":
        this.log(n, event.digest, event.stream, Buffer.from(event.data).toString("utf8"));
        return;
      case "vertex.completed":
        this.flush(n, event.digest);
        this.write(`#${n} DONE ${seconds(event.durationMs)}\n\n`);
        return;
      case "vertex.failed":
        this.flush(n, event.digest);
        this.write(`#${n} ERROR: ${event.error.message.split("\n")[0]}\n\n`);
        return;
      case "vertex.canceled":
        this.flush(n, event.digest);
        this.write(`#${n} CANCELED\n\n`);
        return;
    }
  };

  private number(id: string): number {
    let n = this.numbers.get(id);
    if (n === undefined) {
      n = this.next++;
      this.numbers.set(id, n);
    }
    return n;
  }

  private log(n: number, digest: string, stream: 1 | 2, text: string) {
    const key = `${digest}:${stream}`;
    const lines = ((this.partial.get(key) ?? "") + text).split("\n");
    this.partial.set(key, lines.pop()!);
    const elapsed = ((performance.now() - (this.started.get(digest) ?? performance.now())) / 1000).toFixed(3);
    for (const line of lines) this.write(`#${n} ${elapsed} ${line}\n`);
  }

  private flush(n: number, digest: string) {
    for (const stream of [1, 2] as const) {
      const rest = this.partial.get(`${digest}:${stream}`);
      if (rest) this.log(n, digest, stream, "\n");
    }
  }

  private write(text: string) {
    this.out.write(text);
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}
