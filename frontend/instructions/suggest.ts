/**
 * "did you mean …?" hints for misspelt instruction names, flags, mount keys and mount types, with
 * BuildKit's threshold: the closest option at an edit distance below 3, and no hint for an exact
 * match (the error was then about something else).
 */
export function closestOption(
  value: string,
  options: readonly string[],
  caseSensitive = true,
): string | undefined {
  const wanted = caseSensitive ? value : value.toLowerCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const option of options) {
    const candidate = caseSensitive ? option : option.toLowerCase();
    if (candidate === wanted) return undefined;
    const distance = editDistance(wanted, candidate);
    if (distance < bestDistance) {
      best = caseSensitive ? option : matchCase(candidate, value);
      bestDistance = distance;
    }
  }
  return best;
}

/** Appends ` (did you mean X?)` when an option is close enough. */
export function withSuggestion(
  message: string,
  value: string,
  options: readonly string[],
  caseSensitive = true,
): string {
  const match = closestOption(value, options, caseSensitive);
  return match === undefined ? message : `${message} (did you mean ${match}?)`;
}

function matchCase(option: string, written: string): string {
  if (written === written.toLowerCase()) return option.toLowerCase();
  if (written === written.toUpperCase()) return option.toUpperCase();
  return option;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length]!;
}
