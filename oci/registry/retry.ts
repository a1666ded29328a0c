/**
 * Backoff for transient registry failures: 5xx answers, 429 (with its Retry-After), and sockets
 * reset or cut mid-body. Exponential with jitter, capped, and abortable.
 */
import { setTimeout as sleep } from "node:timers/promises";

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The first delay; each later one doubles, with up to 50% jitter. */
  baseDelayMs: number;
  /** No single wait is longer, whatever Retry-After says. */
  maxDelayMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 30_000 };

/** HTTP statuses worth another try. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

/** The delay before attempt `attempt + 1` (0-based `attempt` just failed). */
export function backoffDelay(policy: RetryPolicy, attempt: number, retryAfter?: string | undefined): number {
  const fromHeader = parseRetryAfter(retryAfter);
  if (fromHeader !== undefined) return Math.min(fromHeader, policy.maxDelayMs);
  const exponential = policy.baseDelayMs * 2 ** attempt;
  return Math.min(exponential * (1 + Math.random() * 0.5), policy.maxDelayMs);
}

/** Retry-After as delay-seconds or an HTTP date, in milliseconds; undefined if absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export async function wait(ms: number, signal?: AbortSignal): Promise<void> {
  await sleep(ms, undefined, signal ? { signal } : {});
}
