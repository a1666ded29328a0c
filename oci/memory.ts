/**
 * Keeps a stream's memory flat (a pull, an export). Each read is a fresh Buffer whose bytes V8
 * counts as external memory, and V8 collects them only after some 64 MB have piled up: a pull or
 * an export streaming a layer would hold up to 64 MB of spent chunks. A minor (young generation)
 * collection every few MB frees them for about a millisecond each. `gc` is reached through `--expose-gc` set at run time, since
 * tbuild's launcher passes Node no flags; where that is refused, nothing happens.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

type Collect = (options: { type: "minor" | "major" }) => void;

/** Bytes streamed between two collections. */
const BYTES_PER_COLLECTION = 4 * 1024 * 1024;

let collect: Collect | null | undefined;
let streamed = 0;

function collector(): Collect | null {
  if (collect === undefined) {
    try {
      setFlagsFromString("--expose-gc");
      collect = runInNewContext("gc") as Collect;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/** Counts bytes that went through a stream, collecting the spent chunks every few MB. */
export function releaseSpentBuffers(bytes: number): void {
  streamed += bytes;
  if (streamed < BYTES_PER_COLLECTION) return;
  streamed = 0;
  collector()?.({ type: "minor" });
}
