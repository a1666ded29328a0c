/**
 * The tests' real-server helpers (test/helpers/sshd.ts, tcp-proxy.ts), for benchmarks that plain
 * Node runs. The helpers import each other as `./x.js`, as TypeScript's nodenext resolution wants;
 * vitest maps that to `./x.ts`, Node does not. So a resolve hook maps a relative `.js` import made
 * by a `.ts` file to the `.ts` beside it when there is no such `.js`, and the helpers are imported
 * after it is in place (static imports would be resolved before it).
 */
import { existsSync } from "node:fs";
import { registerHooks } from "node:module";
import { fileURLToPath } from "node:url";

registerHooks({
  resolve(specifier, context, nextResolve) {
    const parent = context.parentURL;
    if (specifier.startsWith(".") && specifier.endsWith(".js") && parent?.endsWith(".ts")) {
      const asJs = new URL(specifier, parent);
      const asTs = new URL(specifier.replace(/\.js$/, ".ts"), parent);
      if (!existsSync(fileURLToPath(asJs)) && existsSync(fileURLToPath(asTs)))
        return nextResolve(asTs.href, context);
    }
    return nextResolve(specifier, context);
  },
});

export const { startSshd } = await import("../../test/helpers/sshd.ts");
export type { RunningSshd } from "../../test/helpers/sshd.ts";
export const { startTcpProxy } = await import("../../test/helpers/tcp-proxy.ts");
export type { TcpProxy } from "../../test/helpers/tcp-proxy.ts";
export const { makeDockerDebianSlim } = await import("../../test/helpers/debian-image.ts");
