// The one clock of every timed part: the agent's apply loop (retries, the resync) and its
// gratuitous ARP, the BGP speaker's supervisor, and the Kubernetes client (work queue
// delays, leader election, event aggregation, informer backoff and watchdog), behind one
// small interface so unit tests drive time by hand (./fake-clock.ts) instead of sleeping.
// Their one backoff is ./backoff.ts.

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds, Date.now()'s scale. */
  now(): number;
  /** Calls fn once after ms milliseconds unless cancelled. */
  setTimer(fn: () => void, ms: number): Timer;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const handle = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(handle) };
  },
};

/** Resolves after ms, or at once when the signal aborts (never rejects). */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      timer.cancel();
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = clock.setTimer(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
