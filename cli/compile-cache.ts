/**
 * Where Node keeps tbuild's compiled code between runs, which takes a good part off every start.
 *
 * Node's default, `os.tmpdir()/node-compile-cache`, is one directory for every user of the machine,
 * made by whoever ran Node first. Another user's entries cannot be read (each is 0600), so a worker
 * user on a host where root ran tbuild first compiled everything anew on every connection; and a
 * directory someone else made is not to be trusted with code this user runs. So that directory is
 * used only when it is this user's own (made now, or before, by this user, and writable by no one
 * else); otherwise the user's own cache directory is. Inside tbuild's user namespace the user is
 * uid 0 there, and the same directories are theirs.
 */
import { lstatSync, mkdirSync } from "node:fs";
import path from "node:path";

export function compileCacheDir(env: NodeJS.ProcessEnv, tmp: string, uid: number): string | undefined {
  const shared = path.join(tmp, "node-compile-cache");
  try {
    mkdirSync(shared, { mode: 0o700 });
  } catch {
    // There already (anyone's), or /tmp cannot be written: looked at below.
  }
  const stat = lstatSync(shared, { throwIfNoEntry: false });
  if (stat?.isDirectory() && stat.uid === uid && (stat.mode & 0o022) === 0) return shared;
  const base = env.XDG_CACHE_HOME || (env.HOME ? path.join(env.HOME, ".cache") : undefined);
  return base === undefined ? undefined : path.join(base, "tbuild", "node-compile-cache");
}
