// Kubernetes Events (events.k8s.io/v1) about the operator's objects, the way people see what
// it did (`kubectl describe`, `kubectl get events`).
//
// record() never throws and never waits: it decides in memory and the write happens in the
// background, its failure only logged. An event repeated (same object, type, reason, action
// and note) within windowMs of its last occurrence is not a new object: it becomes a series
// on the first one (series.count, series.lastObservedTime), written at most once per
// seriesIntervalMs per event with the count reached by then, as client-go's events library
// does; a series whose Event is gone (the apiserver's one-hour TTL) is created again with its
// count. New Events are rate-limited per object (a bucket of `burst`, one more every
// `refillMs`, client-go's spam filter), and a write backlog beyond maxInFlight drops new
// events, so an operator in a failure loop or a slow apiserver never floods or grows memory.
// flush() writes what is pending and waits for the writes (shutdown, tests).
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { EVENTS, isNotFound, microTime, type KubeClient } from "./client.js";
import { realClock, type Clock, type Timer } from "../common/clock.js";
import type { KubeObject } from "./informer.js";

export type EventType = "Normal" | "Warning";

/** What the recorder needs of a client. */
export type EventClient = Pick<KubeClient, "create" | "patch">;

export interface EventRecorderOptions {
  /** reportingController, e.g. kube-eip.lucheng0127/eip-operator. */
  readonly controller: string;
  /** reportingInstance: this replica (the pod name). */
  readonly instance: string;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** A repeat within this long of the last occurrence joins its series; default 6 min. */
  readonly windowMs?: number;
  /** At most one series write per Event this often; default 10 s. */
  readonly seriesIntervalMs?: number;
  /** New Events per object: up to `burst` at once, then one every refillMs; default 25, 5 min. */
  readonly burst?: number;
  readonly refillMs?: number;
  /** Writes in flight beyond which new Events are dropped; default 100. */
  readonly maxInFlight?: number;
}

interface ObjectReference {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}

interface EventBody {
  readonly apiVersion: "events.k8s.io/v1";
  readonly kind: "Event";
  readonly metadata: { readonly name: string; readonly namespace: string };
  readonly eventTime: string;
  readonly reportingController: string;
  readonly reportingInstance: string;
  readonly action: string;
  readonly reason: string;
  readonly note: string;
  readonly type: EventType;
  readonly regarding: ObjectReference;
}

/** One Event and its series. */
interface Entry {
  readonly key: string;
  readonly body: EventBody;
  count: number;
  lastObserved: number;
  /** The count the apiserver has. */
  written: number;
  lastWrite: number;
  writing: boolean;
  timer: Timer | undefined;
}

/** The apiserver's limits (bytes): note 1 kB, reason, action and reportingInstance 128. */
const NOTE_MAX = 1024;
const FIELD_MAX = 128;

/** At most max bytes of UTF-8, never cutting a character. */
function truncateBytes(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = Buffer.from(s).subarray(0, max).toString("utf8");
  while (Buffer.byteLength(out) > max || out.endsWith("\uFFFD")) out = out.slice(0, -1);
  return out;
}

export class EventRecorder {
  private readonly entries = new Map<string, Entry>();
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly scheduled = new Set<Entry>();
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly windowMs: number;
  private readonly seriesIntervalMs: number;
  private readonly burst: number;
  private readonly refillMs: number;
  private readonly maxInFlight: number;
  private lastSweep: number;
  private droppedCount = 0;

  constructor(
    private readonly client: EventClient,
    private readonly opts: EventRecorderOptions,
  ) {
    this.log = opts.logger.child({ events: opts.controller });
    this.clock = opts.clock ?? realClock;
    this.windowMs = opts.windowMs ?? 6 * 60_000;
    this.seriesIntervalMs = opts.seriesIntervalMs ?? 10_000;
    this.burst = opts.burst ?? 25;
    this.refillMs = opts.refillMs ?? 5 * 60_000;
    this.maxInFlight = opts.maxInFlight ?? 100;
    this.lastSweep = this.clock.now();
  }

  /** Events not written: rate-limited, backlog full, or refused (bad object). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Records an Event about obj (which needs apiVersion, kind and a name); returns at once. */
  record(obj: KubeObject, type: EventType, reason: string, action: string, note: string): void {
    try {
      this.add(obj, type, reason, action, note);
    } catch (err) {
      this.droppedCount++;
      // The object may be the bad part: no metadata at all.
      const about = {
        kind: obj.kind,
        namespace: obj.metadata?.namespace,
        name: obj.metadata?.name,
      };
      this.log.warn({ err, reason, ...about }, "event not recorded");
    }
  }

  /** Writes the pending series updates now and waits for every write. */
  async flush(): Promise<void> {
    for (;;) {
      for (const e of [...this.scheduled]) {
        e.timer?.cancel();
        e.timer = undefined;
        this.scheduled.delete(e);
        this.track(this.write(e, false));
      }
      if (this.inFlight.size === 0) return;
      await Promise.all(this.inFlight);
    }
  }

  private add(obj: KubeObject, type: EventType, reason: string, action: string, note: string) {
    const { apiVersion, kind } = obj;
    const { name, namespace, uid, resourceVersion } = obj.metadata;
    if (!apiVersion || !kind || !name) throw new Error("the object lacks apiVersion, kind or name");
    const now = this.clock.now();
    this.sweep(now);
    const key = JSON.stringify([
      uid,
      apiVersion,
      kind,
      namespace,
      name,
      type,
      reason,
      action,
      note,
    ]);
    const known = this.entries.get(key);
    if (known !== undefined && now - known.lastObserved < this.windowMs) {
      known.count++;
      known.lastObserved = now;
      this.schedule(known);
      return;
    }
    if (!this.take(`${apiVersion}/${kind}/${namespace ?? ""}/${name}`, now)) {
      this.droppedCount++;
      this.log.debug({ kind, name, namespace, reason }, "event rate-limited");
      return;
    }
    if (this.inFlight.size >= this.maxInFlight) {
      this.droppedCount++;
      this.log.debug({ kind, name, namespace, reason }, "event dropped: too many writes pending");
      return;
    }
    const ns = namespace || "default";
    const entry: Entry = {
      key,
      body: {
        apiVersion: "events.k8s.io/v1",
        kind: "Event",
        metadata: {
          name: `${name.slice(0, 200)}.${randomBytes(8).toString("hex")}`,
          namespace: ns,
        },
        eventTime: microTime(now),
        reportingController: this.opts.controller,
        reportingInstance: truncateBytes(this.opts.instance, FIELD_MAX),
        action: truncateBytes(action, FIELD_MAX),
        reason: truncateBytes(reason, FIELD_MAX),
        note: truncateBytes(note, NOTE_MAX),
        type,
        regarding: {
          apiVersion,
          kind,
          name,
          ...(namespace ? { namespace } : {}),
          ...(uid ? { uid } : {}),
          ...(resourceVersion ? { resourceVersion } : {}),
        },
      },
      count: 1,
      lastObserved: now,
      written: 0,
      lastWrite: now,
      writing: false,
      timer: undefined,
    };
    this.entries.set(key, entry);
    this.track(this.write(entry, true));
  }

  /** Takes a token of the object's bucket for a new Event. */
  private take(object: string, now: number): boolean {
    let bucket = this.buckets.get(object);
    if (bucket === undefined) this.buckets.set(object, (bucket = { tokens: this.burst, at: now }));
    const refills = Math.floor((now - bucket.at) / this.refillMs);
    if (refills > 0) {
      bucket.tokens = Math.min(this.burst, bucket.tokens + refills);
      bucket.at += refills * this.refillMs;
    }
    if (bucket.tokens < 1) return false;
    if (bucket.tokens === this.burst) bucket.at = now;
    bucket.tokens--;
    return true;
  }

  /** A series write for the entry, no sooner than seriesIntervalMs after its last write. */
  private schedule(e: Entry): void {
    if (e.writing || e.timer !== undefined) return;
    const delay = Math.max(0, e.lastWrite + this.seriesIntervalMs - this.clock.now());
    e.timer = this.clock.setTimer(() => {
      e.timer = undefined;
      this.scheduled.delete(e);
      this.track(this.write(e, false));
    }, delay);
    this.scheduled.add(e);
  }

  private track(write: Promise<void>): void {
    this.inFlight.add(write);
    void write.finally(() => this.inFlight.delete(write));
  }

  /** Creates the Event, or writes its series; never rejects. */
  private async write(e: Entry, create: boolean): Promise<void> {
    const count = e.count;
    const series = { count, lastObservedTime: microTime(e.lastObserved) };
    const ns = e.body.metadata.namespace;
    e.writing = true;
    try {
      if (create) {
        await this.client.create(EVENTS, ns, count > 1 ? { ...e.body, series } : e.body);
      } else {
        try {
          await this.client.patch(EVENTS, ns, e.body.metadata.name, { series }, { type: "merge" });
        } catch (err) {
          if (!isNotFound(err)) throw err;
          // The Event expired (or was deleted) while its series went on: write it again.
          await this.client.create(EVENTS, ns, { ...e.body, series });
        }
      }
      e.written = count;
    } catch (err) {
      this.log.warn(
        {
          err,
          reason: e.body.reason,
          event: e.body.metadata.name,
          kind: e.body.regarding.kind,
          namespace: e.body.regarding.namespace,
          name: e.body.regarding.name,
        },
        "event write failed",
      );
      // An Event never created is forgotten: its next occurrence starts a new one.
      if (e.written === 0 && this.entries.get(e.key) === e) this.entries.delete(e.key);
    } finally {
      e.writing = false;
      e.lastWrite = this.clock.now();
    }
    if (e.count > e.written && this.entries.get(e.key) === e) this.schedule(e);
  }

  /** Forgets series past their window and full buckets, once a minute. */
  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [key, e] of this.entries) {
      if (now - e.lastObserved >= this.windowMs && !e.writing && e.timer === undefined) {
        this.entries.delete(key);
      }
    }
    for (const [object, b] of this.buckets) {
      if (b.tokens + (now - b.at) / this.refillMs >= this.burst) this.buckets.delete(object);
    }
  }
}
