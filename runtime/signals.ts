/**
 * Signal names as docker takes them (`--stop-signal`, `kill -s`, STOPSIGNAL): `SIGTERM`, `TERM`,
 * `term` or a number, turned into Node's name for the signal.
 */
import { constants } from "node:os";
import { UsageError } from "../errors/index.js";

export function parseSignal(text: string): NodeJS.Signals {
  const trimmed = text.trim();
  const signals = constants.signals as Record<string, number>;
  if (/^\d+$/.test(trimmed)) {
    const number = Number(trimmed);
    const name = Object.keys(signals).find((n) => signals[n] === number);
    if (name !== undefined) return name as NodeJS.Signals;
  } else {
    const upper = trimmed.toUpperCase();
    const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
    if (signals[name] !== undefined) return name as NodeJS.Signals;
  }
  throw new UsageError(`invalid signal ${JSON.stringify(text)}: a name (SIGTERM, TERM) or a number (15)`);
}
