import { goToLower, goToUpper } from "./go-text.js";

/** Edit distance over code points (insert, delete, substitute, each costing 1). */
function editDistance(a: string, b: string): number {
  const left = [...a];
  const right = [...b];
  let previous = Array.from({ length: right.length + 1 }, (_, j) => j);
  for (let i = 1; i <= left.length; i++) {
    const current = [i];
    for (let j = 1; j <= right.length; j++) {
      const substitution = previous[j - 1]! + (left[i - 1] === right[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution));
    }
    previous = current;
  }
  return previous[right.length]!;
}

/** The option spelled in the case the user used: all lower, all upper, or as listed. */
function matchCase(option: string, written: string): string {
  if (written === goToLower(written)) return goToLower(option);
  if (written === goToUpper(written)) return goToUpper(option);
  return option;
}

/**
 * BuildKit's "did you mean" rule: the closest option (case-insensitively) at an edit distance below
 * 3, the first one listed on a tie; nothing when the value is itself an option.
 */
export function closestMatch(value: string, options: readonly string[]): string | undefined {
  const wanted = goToLower(value);
  const wantedLength = [...wanted].length;
  let match: string | undefined;
  let best = 3;
  for (const option of options) {
    const candidate = goToLower(option);
    if (candidate === wanted) return undefined;
    // Long words cannot be within distance 2 of a short keyword; skip the quadratic work.
    if (Math.abs([...candidate].length - wantedLength) >= best) continue;
    const distance = editDistance(wanted, candidate);
    if (distance < best) {
      match = matchCase(candidate, value);
      best = distance;
    }
  }
  return match;
}
