/**
 * An error as it crosses a process boundary (the library's rootless child, a remote worker): a
 * TbuildError's name, message and own fields (code, exitCode, a step's failure...) as plain JSON,
 * rebuilt on the other side as the same TbuildError, so that a caller branching on `code` or
 * printing `message` cannot tell where it was raised. Anything else arrives as a plain Error.
 */
import { isTbuildError, TbuildError } from "./index.js";

export interface WireError {
  name: string;
  message: string;
  tbuild: boolean;
  fields: Record<string, unknown>;
}

export function errorToWire(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err), tbuild: false, fields: {} };
  const fields: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(err)) {
    if (key === "cause" || key === "name") continue;
    const json = JSON.stringify(value);
    if (json !== undefined) fields[key] = JSON.parse(json);
  }
  return { name: err.name, message: err.message, tbuild: isTbuildError(err), fields };
}

/**
 * The error `wire` describes. `classes` are the TbuildError subclasses the receiver can rebuild by
 * name (so that `instanceof` holds); other TbuildErrors arrive as TbuildError with their fields.
 */
export function errorFromWire(
  wire: WireError,
  classes: Record<string, { prototype: TbuildError }> = {},
): Error {
  const err = wire.tbuild ? new TbuildError(String(wire.fields.code), wire.message) : new Error(wire.message);
  if (wire.tbuild) Object.setPrototypeOf(err, (classes[wire.name] ?? TbuildError).prototype);
  Object.assign(err, wire.fields);
  err.name = wire.name;
  return err;
}
