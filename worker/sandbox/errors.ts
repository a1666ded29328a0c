import { TbuildError } from "../../errors/index.js";

/**
 * The sandbox could not run a process: runc is missing (the message says how to install it), the
 * image's USER cannot be resolved, the spec asks for something impossible, or runc itself failed
 * (the message carries runc's own words). A process that ran and exited non-zero is not an error:
 * its exit code is the result.
 */
export class SandboxError extends TbuildError {}
