// The one backoff of every retry: the agent's apply loop, the BGP speaker's restarts of
// gobgpd, the operator's work queue and the informers' relists.

export interface BackoffOptions {
  /** The first delay's ceiling (attempt 0). */
  readonly baseMs: number;
  /** No delay's ceiling is above this. */
  readonly maxMs: number;
  /** Where the jitter comes from, in [0, 1); Math.random by default (tests pin it). */
  readonly random?: () => number;
}

/**
 * Exponential backoff with jitter: base·2^attempt capped at max, then a random point in its
 * upper half, so clients that failed together do not retry together. attempt counts from 0.
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const { baseMs, maxMs, random = Math.random } = options;
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (random() * ceiling) / 2;
}
