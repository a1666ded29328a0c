/**
 * `dir/rel` for a `rel` known to be clean (a name read from a directory, or a path made of such
 * names): what `path.join` gives for it, without normalizing again a path that is already
 * normal. Walks of many small files call this for every entry, where path.join's normalizing
 * was much of their time and garbage.
 */
export function childPath(dir: string, rel: string): string {
  if (rel === "") return dir;
  return dir.endsWith("/") ? dir + rel : `${dir}/${rel}`;
}

/** `file`'s path below `dir` (`dir/a/b` → `a/b`), or undefined when it is not below it. */
export function pathBelow(dir: string, file: string): string | undefined {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return file.startsWith(prefix) && file.length > prefix.length ? file.slice(prefix.length) : undefined;
}
