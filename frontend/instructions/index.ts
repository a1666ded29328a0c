/**
 * Typed Dockerfile instructions: `parseInstruction` turns one syntax node into a checked
 * instruction (flags, argument counts, HEALTHCHECK durations, ONBUILD triggers), and
 * `parseMount` reads a RUN `--mount` value once the lowering has expanded its variables.
 */
export { type MountContext, parseMount } from "./mount.js";
export { type InstructionContext, parseInstruction } from "./parse.js";
export type * from "./types.js";
