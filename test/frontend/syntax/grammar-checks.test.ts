/**
 * Builds skip Chevrotain's checks of the grammar and the line lexer (they cost time on every
 * parse); here they run, so a grammar or token definition error fails the tests instead.
 */
import { describe, expect, it } from "vitest";
import { DockerfileGrammar } from "../../../frontend/syntax/grammar.js";
import { createLineLexer } from "../../../frontend/syntax/tokens.js";

describe("Chevrotain's own checks", () => {
  it("find no error in the Dockerfile grammar", () => {
    // With its checks on, Chevrotain throws on any definition error it finds.
    expect(() => new DockerfileGrammar({ validate: true })).not.toThrow();
  });

  it("find no error in the line lexer's token definitions", () => {
    expect(createLineLexer({ validate: true }).lexerDefinitionErrors).toEqual([]);
  });
});
