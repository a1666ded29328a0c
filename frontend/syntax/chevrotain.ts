/**
 * Chevrotain's runtime, loaded from the single ES module its package ships (`lib/chevrotain.mjs`)
 * rather than through its `exports` entry, which loads the library as some sixty modules: one
 * file instead saves about 30 ms on every command that reads a Dockerfile. Where that file is
 * missing (another packaging of the library), the entry point is used.
 */
type Chevrotain = typeof import("chevrotain");

async function loadChevrotain(): Promise<Chevrotain> {
  try {
    return (await import(new URL("../chevrotain.mjs", import.meta.resolve("chevrotain")).href)) as Chevrotain;
  } catch {
    return import("chevrotain");
  }
}

const chevrotain = await loadChevrotain();

export const { createToken, CstParser, EOF, Lexer, tokenMatcher } = chevrotain;
