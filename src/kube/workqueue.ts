// A work queue of object keys for the operator's reconcilers, with client-go's rate-limited
// queue semantics: a key is queued at most once however often it is added; a key being
// processed is never handed out twice at once, and one added again meanwhile is queued again
// when done() is called; keys are handed out first in, first out; a failed key comes back
// after a per-key exponential backoff with jitter (addRateLimited, ../common/backoff.ts)
// until forget() resets it; addAfter
// holds a key back, keeping the earliest time when asked twice.
//
// Unlike client-go, shutdown() drops what is still queued: get() answers undefined at once,
// since the operator shuts down when it stops leading and must stop acting, not drain.
//
// No I/O; time comes from an injected Clock, so the tests drive it by hand.
import { type BackoffOptions, backoffDelay } from "../common/backoff.js";
import { realClock, type Clock, type Timer } from "../common/clock.js";

/** What a queue reports as it works (client-go's workqueue metrics). */
export interface WorkQueueMetrics {
  /** Keys ready to be handed out, after every change. */
  depth(ready: number): void;
  /** A key was added that was not waiting already. */
  added(): void;
  /** A key was handed out, ms after it was added. */
  waited(ms: number): void;
  /** addRateLimited: a key will be retried. */
  retried(): void;
}

export interface WorkQueueOptions {
  /** First delay of addRateLimited; doubled at each further failure. Default 100 ms. */
  readonly baseDelayMs?: number;
  /** Cap of addRateLimited's delay. Default 60 s. */
  readonly maxDelayMs?: number;
  /** The backoff's jitter source; default Math.random. */
  readonly random?: () => number;
  readonly clock?: Clock;
  readonly metrics?: WorkQueueMetrics;
}

export class WorkQueue {
  /** Keys ready, in order; `head` is the next one (the array is compacted now and then). */
  private queue: string[] = [];
  private head = 0;
  /** Keys wanting processing: queued, or added again while being processed. */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly waiting = new Map<string, { readonly at: number; readonly timer: Timer }>();
  private readonly failures = new Map<string, number>();
  /** When each key wanting processing was added (for metrics.waited). */
  private readonly addedAt = new Map<string, number>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private closed = false;
  private readonly clock: Clock;
  private readonly backoff: BackoffOptions;
  private readonly metrics: WorkQueueMetrics | undefined;

  constructor(opts: WorkQueueOptions = {}) {
    this.clock = opts.clock ?? realClock;
    this.metrics = opts.metrics;
    this.backoff = {
      baseMs: opts.baseDelayMs ?? 100,
      maxMs: opts.maxDelayMs ?? 60_000,
      ...(opts.random ? { random: opts.random } : {}),
    };
  }

  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    this.addedAt.set(key, this.clock.now());
    this.metrics?.added();
    if (this.processing.has(key)) return;
    this.push(key);
  }

  /** Adds the key after ms (at once when ms <= 0); an earlier pending time wins. */
  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) return this.add(key);
    const at = this.clock.now() + ms;
    const pending = this.waiting.get(key);
    if (pending !== undefined) {
      if (pending.at <= at) return;
      pending.timer.cancel();
    }
    const timer = this.clock.setTimer(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms);
    this.waiting.set(key, { at, timer });
  }

  /**
   * Adds the key after its backoff: base·2^(failures so far), capped, with jitter in its upper
   * half; counts a failure.
   */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.metrics?.retried();
    this.addAfter(key, backoffDelay(n, this.backoff));
  }

  /** Resets the key's backoff (it was processed successfully). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** addRateLimited calls since the last forget(). */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /**
   * The next key, which is then being processed until done(key); waits while none is ready.
   * undefined once the queue is shut down.
   */
  get(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** The key is processed; if it was added meanwhile it is queued again. */
  done(key: string): void {
    if (!this.processing.delete(key)) return;
    if (this.dirty.has(key) && !this.closed) this.push(key);
  }

  /** Keys ready to be handed out (not those being processed or held back). */
  get length(): number {
    return this.queue.length - this.head;
  }

  get isShutdown(): boolean {
    return this.closed;
  }

  /** Drops every key and pending delay; get() answers undefined from now on. */
  shutdown(): void {
    this.closed = true;
    for (const { timer } of this.waiting.values()) timer.cancel();
    this.waiting.clear();
    this.queue = [];
    this.head = 0;
    this.dirty.clear();
    this.addedAt.clear();
    this.metrics?.depth(0);
    for (const resolve of this.getters.splice(0)) resolve(undefined);
  }

  private push(key: string): void {
    this.queue.push(key);
    this.metrics?.depth(this.length);
    this.handOut();
  }

  private take(): string | undefined {
    if (this.head >= this.queue.length) return undefined;
    const key = this.queue[this.head++] as string;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.dirty.delete(key);
    this.processing.add(key);
    if (this.metrics) {
      this.metrics.depth(this.length);
      this.metrics.waited(this.clock.now() - (this.addedAt.get(key) ?? this.clock.now()));
    }
    this.addedAt.delete(key);
    return key;
  }

  private handOut(): void {
    while (this.getters.length > 0) {
      const key = this.take();
      if (key === undefined) return;
      this.getters.shift()?.(key);
    }
  }
}
