/**
 * Where the store is: a module of its own, so that commands that only read a few records there
 * (`ps`, `stop`, `logs`) start without loading the store's code.
 */
import os from "node:os";
import path from "node:path";

/** `$TBUILD_ROOT`, else `$XDG_DATA_HOME/tbuild`, else `~/.local/share/tbuild`. */
export function defaultStoreRoot(env: NodeJS.ProcessEnv): string {
  if (env.TBUILD_ROOT) return path.resolve(env.TBUILD_ROOT);
  if (env.XDG_DATA_HOME) return path.resolve(env.XDG_DATA_HOME, "tbuild");
  return path.join(env.HOME || os.homedir(), ".local", "share", "tbuild");
}
