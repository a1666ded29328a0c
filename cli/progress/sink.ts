/**
 * The one seam between a build and how its progress is shown: the live terminal view (`tty`),
 * BuildKit's plain log (`plain`), one JSON object per line (`rawjson`), or nothing but the image
 * ID (`quiet`). Each renders the same BuildEvent stream (build/events.ts) its own way.
 */
import type { BuildEvent } from "../../build/events.js";

export interface ProgressSink {
  /**
   * True when `build.failed` is shown in the sink's own form (rawjson's last event), so the
   * command must not print the error again.
   */
  readonly reportsErrors: boolean;
  handle(event: BuildEvent): void;
}
