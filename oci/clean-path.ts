/**
 * Go's `path.Clean`, the one lexical path cleaning every Docker and BuildKit path goes through:
 * `.dockerignore` patterns, mount targets, COPY sources, names inside archives. Lexical only: it
 * never looks at a file system (for a path inside a root through symlinks, see
 * worker/root-path.ts).
 */

/** Go's `path.Clean`: `""` → `.`; no empty or `.` elements; `..` resolved where it can be, dropped at a root. */
export function cleanPath(p: string): string {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const parts: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length > 0 && parts[parts.length - 1] !== "..") parts.pop();
      else if (!rooted) parts.push("..");
      continue;
    }
    parts.push(part);
  }
  const joined = parts.join("/");
  if (rooted) return `/${joined}`;
  return joined === "" ? "." : joined;
}

/** `/`-rooted and clean, no trailing slash (`a/./b/` → `/a/b`, `../x` → `/x`): a path inside a filesystem. */
export function cleanAbsolutePath(p: string): string {
  return cleanPath(`/${p}`);
}

/** As cleanAbsolutePath, without the leading `/`: `""` for the root (`./a/` → `a`, `.` → `""`). */
export function cleanRelativePath(p: string): string {
  return cleanAbsolutePath(p).slice(1);
}
