// A Clock for unit tests: time stands still until the test advances it, and timers fire in
// order of their due time, with the promise chains they start allowed to run in between (a
// fake client's answers are promises), so a test reads like a timeline.
import type { Clock, Timer } from "./clock.js";

interface Pending {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Lets every promise chain that is ready run (a few turns of the event loop). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock implements Clock {
  private time: number;
  private seq = 0;
  private pending: Pending[] = [];

  constructor(start = 1_700_000_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const entry: Pending = {
      at: this.time + Math.max(0, ms),
      seq: this.seq++,
      fn,
      cancelled: false,
    };
    this.pending.push(entry);
    return { cancel: () => void (entry.cancelled = true) };
  }

  /** Timers not yet fired nor cancelled. */
  get timers(): number {
    return this.pending.filter((p) => !p.cancelled).length;
  }

  /** Moves time forward by ms, firing each timer that falls due at its own time. */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    await settle();
    for (;;) {
      this.pending = this.pending.filter((p) => !p.cancelled);
      const next = this.pending
        .filter((p) => p.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.pending.splice(this.pending.indexOf(next), 1);
      this.time = next.at;
      next.fn();
      await settle();
    }
    this.time = target;
    await settle();
  }
}
