/**
 * What each step printed, split into lines as the chunks arrive (a line may span chunks, and so
 * may a UTF-8 character), stamped with the seconds since the step started, as BuildKit stamps
 * them. The last few lines of every step are kept, so that a failure can show them in any
 * progress mode.
 */
import { TextDecoder } from "node:util";

export interface OutputLine {
  /** Seconds between the step's start and the line's arrival. */
  seconds: number;
  text: string;
}

interface StepStream {
  decoder: TextDecoder;
  partial: string;
}

interface StepRecord {
  started: number;
  streams: Map<1 | 2, StepStream>;
  /** The last lines, oldest first: a ring of at most `keep`. */
  last: OutputLine[];
}

export class StepOutput {
  private readonly steps = new Map<string, StepRecord>();
  private readonly keep: number;

  constructor(keep: number) {
    this.keep = keep;
  }

  /** The step started now; output before this is timed from its first chunk. */
  start(id: string, at = performance.now()): void {
    const step = this.steps.get(id);
    if (step) step.started = at;
    else this.steps.set(id, { started: at, streams: new Map(), last: [] });
  }

  /** The lines `data` completes. */
  append(id: string, stream: 1 | 2, data: Uint8Array, at = performance.now()): OutputLine[] {
    const step = this.record(id, at);
    let state = step.streams.get(stream);
    if (!state) {
      state = { decoder: new TextDecoder("utf-8"), partial: "" };
      step.streams.set(stream, state);
    }
    const pieces = (state.partial + state.decoder.decode(data, { stream: true })).split("\n");
    state.partial = pieces.pop()!;
    return this.keepLines(step, pieces, at);
  }

  /** The step is over: its unfinished last lines, if any, count as lines. */
  end(id: string, at = performance.now()): OutputLine[] {
    const step = this.steps.get(id);
    if (!step) return [];
    const rest: string[] = [];
    for (const state of step.streams.values()) {
      const text = state.partial + state.decoder.decode();
      state.partial = "";
      if (text) rest.push(text);
    }
    return this.keepLines(step, rest, at);
  }

  /** What the step printed after its last newline, per stream, so far. */
  unfinished(id: string): string[] {
    const streams = this.steps.get(id)?.streams.values() ?? [];
    return [...streams].map((state) => state.partial).filter((text) => text !== "");
  }

  /** The step's last lines, oldest first. */
  last(id: string): OutputLine[] {
    return [...(this.steps.get(id)?.last ?? [])];
  }

  private record(id: string, at: number): StepRecord {
    let step = this.steps.get(id);
    if (!step) {
      step = { started: at, streams: new Map(), last: [] };
      this.steps.set(id, step);
    }
    return step;
  }

  private keepLines(step: StepRecord, texts: string[], at: number): OutputLine[] {
    const seconds = Math.max(0, (at - step.started) / 1000);
    const lines = texts.map((text) => ({ seconds, text: text.endsWith("\r") ? text.slice(0, -1) : text }));
    step.last.push(...lines);
    if (step.last.length > this.keep) step.last.splice(0, step.last.length - this.keep);
    return lines;
  }
}

/** `0.123 text`: three decimals under 10 s, two under 100 s, one above, as BuildKit prints output. */
export function formatOutputLine(line: OutputLine): string {
  const digits = line.seconds < 10 ? 3 : line.seconds < 100 ? 2 : 1;
  return `${line.seconds.toFixed(digits)} ${line.text}`;
}
