// An informer: a local cache of one resource kept up to date by list-then-watch, with an
// event for every change it sees, so the operator reads the cluster from memory and reacts to
// changes instead of polling.
//
// The loop, one per informer: list (pages) -> replace the cache, emitting the differences
// with what it held (adds, modifies by resourceVersion, deletes), so consumers converge after
// any gap -> watch from the list's resourceVersion with bookmarks -> each event updates the
// cache, then the handlers are told. When the server ends a watch (timeoutSeconds) the next
// one starts from the last resourceVersion seen (events or bookmarks), without a list. A 410
// (the resourceVersion is too old) re-lists at once; any other failure (refused, reset, a
// 5xx, a broken stream) re-lists after exponential backoff with jitter, reset by the first
// event that arrives; a watch the server ends early without any event backs off too. A
// watchdog ends a watch that delivered nothing, not even a bookmark, for silenceTimeoutMs (a
// half-open connection, a stuck apiserver), and the watch starts again from the last
// resourceVersion. Every restart is logged with its reason and counted (restarts, relists,
// silences) for metrics.
//
// Cached objects lack metadata.managedFields (see slim). Handlers run synchronously in event
// order, after the cache changed; one that throws is
// logged and does not disturb the others or the loop.
import type { Logger } from "pino";
import { type BackoffOptions, backoffDelay } from "../common/backoff.js";
import { realClock, sleep, type Clock, type Timer } from "../common/clock.js";
import { isGone, type KubeClient, type ResourceRef, type WatchEventType } from "./client.js";
import { objectFields } from "../common/logger.js";

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    deletionTimestamp?: string;
    finalizers?: string[];
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
}

/** "namespace/name", or "name" for a cluster-scoped object. */
export function objectKey(obj: KubeObject): string {
  const ns = obj.metadata.namespace;
  return ns ? `${ns}/${obj.metadata.name}` : obj.metadata.name;
}

export type InformerEventType = "added" | "modified" | "deleted";

export interface InformerEvent<T> {
  readonly type: InformerEventType;
  readonly key: string;
  /** The new state; for "deleted", the last state known. */
  readonly obj: T;
  /** The state the cache held before ("modified", "deleted"). */
  readonly old?: T;
}

/** What an informer needs of a client. */
export type ListWatchClient = Pick<KubeClient, "list" | "watch">;

export interface InformerOptions {
  /** Only this namespace; default all. */
  readonly namespace?: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly logger: Logger;
  /** Names the informer in logs. */
  readonly name: string;
  /** The server ends each watch after this long; default 300. */
  readonly watchTimeoutSec?: number;
  /** A watch silent this long is restarted; default twice watchTimeoutSec. */
  readonly silenceTimeoutMs?: number;
  /** Backoff of re-lists after failures; default 500 ms doubling up to 30 s. */
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
  /** List page size; default 500. */
  readonly pageSize?: number;
  readonly clock?: Clock;
  /** The backoff's jitter source; default Math.random. */
  readonly random?: () => number;
}

function isKubeObject(v: unknown): v is KubeObject {
  if (typeof v !== "object" || v === null) return false;
  const meta = (v as { metadata?: unknown }).metadata;
  return (
    typeof meta === "object" &&
    meta !== null &&
    typeof (meta as { name?: unknown }).name === "string"
  );
}

/**
 * Drops metadata.managedFields (server-side apply's bookkeeping, often the largest part of
 * an object) before the object is cached: nothing here reads it, and with thousands of
 * objects cached it is most of the cache's memory.
 */
function slim(obj: KubeObject): KubeObject {
  delete (obj.metadata as { managedFields?: unknown }).managedFields;
  return obj;
}

/** A bookmark's resourceVersion, or undefined when it has none. */
function bookmarkVersion(v: unknown): string | undefined {
  const meta =
    typeof v === "object" && v !== null ? (v as { metadata?: unknown }).metadata : undefined;
  const rv =
    typeof meta === "object" && meta !== null
      ? (meta as { resourceVersion?: unknown }).resourceVersion
      : undefined;
  return typeof rv === "string" && rv !== "" ? rv : undefined;
}

interface Index<T> {
  readonly fn: (obj: T) => readonly string[];
  readonly keys: Map<string, Set<string>>;
}

export class Informer<T extends KubeObject> {
  private readonly store = new Map<string, T>();
  private readonly handlers: ((ev: InformerEvent<T>) => void)[] = [];
  private readonly restartHandlers: (() => void)[] = [];
  private readonly indexes = new Map<string, Index<T>>();
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly watchTimeoutSec: number;
  private readonly silenceTimeoutMs: number;
  private readonly stopper = new AbortController();
  private running: Promise<void> | undefined;
  private resourceVersion = "";
  private isSynced = false;
  private syncWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private readonly counters = { restarts: 0, relists: 0, silences: 0 };
  /** Failures since the last event: the exponent of the next backoff. */
  private failures = 0;

  constructor(
    private readonly client: ListWatchClient,
    private readonly ref: ResourceRef,
    private readonly opts: InformerOptions,
  ) {
    this.log = opts.logger.child({ informer: opts.name });
    this.clock = opts.clock ?? realClock;
    this.watchTimeoutSec = opts.watchTimeoutSec ?? 300;
    this.silenceTimeoutMs = opts.silenceTimeoutMs ?? 2 * this.watchTimeoutSec * 1000;
  }

  /** Handlers see every event from the first list on; add them before start(). */
  onEvent(handler: (ev: InformerEvent<T>) => void): void {
    this.handlers.push(handler);
  }

  /** Handlers called at each restart (counted in restarts), for a metric. */
  onRestart(handler: () => void): void {
    this.restartHandlers.push(handler);
  }

  /** An index of the cache: fn gives the values an object is found under. Before start(). */
  addIndex(name: string, fn: (obj: T) => readonly string[]): void {
    if (this.running) throw new Error("addIndex after start()");
    this.indexes.set(name, { fn, keys: new Map() });
  }

  /** The cached objects an index finds under the value. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`no index ${name}`);
    return [...(index.keys.get(value) ?? [])].flatMap((k) => {
      const obj = this.store.get(k);
      return obj ? [obj] : [];
    });
  }

  start(): void {
    if (this.stopper.signal.aborted) throw new Error("informer stopped");
    this.running ??= this.run();
  }

  /** Ends the watch and the loop; resolves when they are done. The cache is kept. */
  async stop(): Promise<void> {
    this.stopper.abort();
    for (const w of this.syncWaiters.splice(0))
      w.reject(new Error(`informer ${this.opts.name} stopped`));
    await this.running;
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  /** True once the first list is in the cache (and stays true). */
  get synced(): boolean {
    return this.isSynced;
  }

  /** Times list-and-watch went on after a watch ended or a list or watch failed. */
  get restarts(): number {
    return this.counters.restarts;
  }

  /** Successful lists after the first. */
  get relists(): number {
    return this.counters.relists;
  }

  /** Watches ended by the watchdog. */
  get silences(): number {
    return this.counters.silences;
  }

  /** Resolves once synced; rejects if the signal aborts or the informer stops first. */
  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.isSynced) return Promise.resolve();
    if (this.stopper.signal.aborted) return Promise.reject(new Error("informer stopped"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject,
      };
      const onAbort = () => {
        this.syncWaiters = this.syncWaiters.filter((w) => w !== waiter);
        reject(new Error(`waiting for informer ${this.opts.name}: aborted`));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.syncWaiters.push(waiter);
    });
  }

  private async run(): Promise<void> {
    const stop = this.stopper.signal;
    let reason = "start";
    while (!stop.aborted) {
      try {
        await this.relist(reason, stop);
        for (;;) {
          const started = this.clock.now();
          const outcome = await this.watchOnce(stop);
          if (stop.aborted) return;
          this.restarted();
          const silent = outcome.silent;
          if (silent) this.counters.silences++;
          // A watch the server ends early without a word, again and again, must not spin;
          // one that delivered, or lasted about its timeout, is healthy.
          const early = this.clock.now() - started < (this.watchTimeoutSec * 1000) / 2;
          if (!early) this.failures = 0;
          const delayMs =
            outcome.delivered === 0 && early && !silent
              ? backoffDelay(this.failures++, this.backoff)
              : 0;
          this.log.info(
            {
              reason: silent ? "silent" : "closed",
              resourceVersion: this.resourceVersion,
              delivered: outcome.delivered,
              delayMs: Math.round(delayMs),
              restarts: this.counters.restarts,
            },
            silent ? "watch silent too long, restarting it" : "watch ended, restarting it",
          );
          if (delayMs > 0) await sleep(this.clock, delayMs, stop);
          if (stop.aborted) return;
        }
      } catch (err) {
        if (stop.aborted) return;
        const gone = isGone(err);
        // The first 410 re-lists at once; repeated failures of any kind back off.
        const delayMs = gone && this.failures === 0 ? 0 : backoffDelay(this.failures, this.backoff);
        this.failures++;
        reason = gone ? "gone" : "error";
        this.restarted();
        this.log.warn(
          { reason, err, resourceVersion: this.resourceVersion, delayMs: Math.round(delayMs) },
          gone ? "resourceVersion too old, re-listing" : "list or watch failed, re-listing",
        );
        if (delayMs > 0) await sleep(this.clock, delayMs, stop);
      }
    }
  }

  private get backoff(): BackoffOptions {
    return {
      baseMs: this.opts.backoffBaseMs ?? 500,
      maxMs: this.opts.backoffMaxMs ?? 30_000,
      ...(this.opts.random ? { random: this.opts.random } : {}),
    };
  }

  /** Lists and replaces the cache, emitting the differences. */
  private async relist(reason: string, stop: AbortSignal): Promise<void> {
    const { items, resourceVersion } = await this.client.list<unknown>(
      this.ref,
      {
        namespace: this.opts.namespace,
        labelSelector: this.opts.labelSelector,
        fieldSelector: this.opts.fieldSelector,
        limit: this.opts.pageSize ?? 500,
      },
      { signal: stop },
    );
    if (stop.aborted) return;
    const fresh = new Map<string, T>();
    for (const item of items) {
      if (!isKubeObject(item)) throw new Error(`list ${this.ref.resource}: an item without a name`);
      fresh.set(objectKey(item), slim(item) as T);
    }
    const events: InformerEvent<T>[] = [];
    for (const [key, obj] of fresh) {
      const old = this.store.get(key);
      if (old === undefined) events.push({ type: "added", key, obj });
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) {
        events.push({ type: "modified", key, obj, old });
      }
    }
    for (const [key, old] of this.store) {
      if (!fresh.has(key)) events.push({ type: "deleted", key, obj: old, old });
    }
    for (const ev of events) this.put(ev.key, ev.type === "deleted" ? undefined : ev.obj);
    this.resourceVersion = resourceVersion;
    if (this.isSynced) this.counters.relists++;
    this.log.debug(
      { reason, resourceVersion, objects: this.store.size, changes: events.length },
      "listed",
    );
    for (const ev of events) this.emit(ev);
    if (!this.isSynced) {
      this.isSynced = true;
      for (const w of this.syncWaiters.splice(0)) w.resolve();
    }
  }

  /** One watch from the last resourceVersion, under the watchdog. */
  private async watchOnce(stop: AbortSignal): Promise<{ delivered: number; silent: boolean }> {
    const watch = new AbortController();
    const onStop = () => watch.abort();
    stop.addEventListener("abort", onStop, { once: true });
    let silent = false;
    let delivered = 0;
    let timer: Timer | undefined;
    const arm = () => {
      timer?.cancel();
      timer = this.clock.setTimer(() => {
        silent = true;
        watch.abort();
      }, this.silenceTimeoutMs);
    };
    arm();
    try {
      await this.client.watch<unknown>(
        this.ref,
        {
          namespace: this.opts.namespace,
          resourceVersion: this.resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds: this.watchTimeoutSec,
          labelSelector: this.opts.labelSelector,
          fieldSelector: this.opts.fieldSelector,
        },
        (type, obj) => {
          delivered++;
          this.failures = 0;
          arm();
          this.apply(type, obj);
        },
        watch.signal,
      );
    } finally {
      timer?.cancel();
      stop.removeEventListener("abort", onStop);
    }
    return { delivered, silent };
  }

  private apply(type: WatchEventType, obj: unknown): void {
    if (type === "BOOKMARK") {
      // A bookmark's object carries only metadata.resourceVersion (and annotations): no name.
      const rv = bookmarkVersion(obj);
      if (rv === undefined) {
        throw new Error(`watch ${this.ref.resource}: a bookmark without a resourceVersion`);
      }
      this.resourceVersion = rv;
      return;
    }
    if (!isKubeObject(obj)) throw new Error(`watch ${this.ref.resource}: an object without a name`);
    slim(obj);
    const rv = obj.metadata.resourceVersion;
    const key = objectKey(obj);
    const old = this.store.get(key);
    if (type === "DELETED") {
      if (old !== undefined) {
        this.put(key, undefined);
        this.emit({ type: "deleted", key, obj: obj as T, old });
      }
    } else {
      this.put(key, obj as T);
      this.emit(
        old === undefined
          ? { type: "added", key, obj: obj as T }
          : { type: "modified", key, obj: obj as T, old },
      );
    }
    if (rv) this.resourceVersion = rv;
  }

  /** Sets (or, with undefined, removes) a cache entry, keeping the indexes right. */
  private put(key: string, obj: T | undefined): void {
    const old = this.store.get(key);
    for (const index of this.indexes.values()) {
      if (old !== undefined) {
        for (const v of index.fn(old)) {
          const keys = index.keys.get(v);
          keys?.delete(key);
          if (keys?.size === 0) index.keys.delete(v);
        }
      }
      if (obj !== undefined) {
        for (const v of index.fn(obj)) {
          let keys = index.keys.get(v);
          if (!keys) index.keys.set(v, (keys = new Set()));
          keys.add(key);
        }
      }
    }
    if (obj === undefined) this.store.delete(key);
    else this.store.set(key, obj);
  }

  private restarted(): void {
    this.counters.restarts++;
    for (const handler of this.restartHandlers) handler();
  }

  private emit(ev: InformerEvent<T>): void {
    for (const handler of this.handlers) {
      try {
        handler(ev);
      } catch (err) {
        this.log.error({ err, ...objectFields(ev.key), type: ev.type }, "informer handler failed");
      }
    }
  }
}
