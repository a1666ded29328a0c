/**
 * A failed step, printed as BuildKit prints it after a failed build: the step's name and its last
 * output lines between `------` rules, then the Dockerfile excerpt; the command's own `ERROR:`
 * line (the reason) comes last.
 */
import { capLine } from "../../errors/excerpt.js";

/** The block printed after the progress: the step, its output, the Dockerfile excerpt (ends with a newline). */
export function formatStepFailure(failure: {
  name?: string;
  lastOutput?: string[];
  excerpt?: string[];
}): string {
  const lines = [
    "------",
    ` > ${capLine(failure.name ?? "")}:`,
    ...(failure.lastOutput ?? []),
    "------",
    ...(failure.excerpt ?? []),
  ];
  return `${lines.join("\n")}\n`;
}
