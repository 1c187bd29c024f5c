// Leader election on a coordination.k8s.io/v1 Lease, with client-go's leaderelection
// semantics, so that of several eip-operator replicas exactly one acts at a time.
//
// Every write is a PUT carrying the resourceVersion read just before (a create when there
// is no Lease yet), so two candidates never both win one round: the apiserver refuses the
// second with a Conflict. A candidate takes the Lease when it has no holder, or when its
// record has not changed for leaseDurationSec by the candidate's own clock since it last saw
// it change (never by comparing renewTime with its clock, so clock skew between machines
// does not matter); a live Lease of another holder is never taken. It tries every
// retryPeriodSec (with client-go's jitter, up to 2.2 times that). The leader renews every
// retryPeriodSec; when renewing has failed for renewDeadlineSec (each request bounded by
// the time left), it stops leading: the signal given to onStartedLeading aborts, then
// onStoppedLeading is called and run() resolves (the operator exits; a new process runs for
// leadership again). renewDeadlineSec < leaseDurationSec leaves the old leader time to stop
// before anyone may take over.
//
// stop() stops leading the same way, then releases the Lease (no holder, a duration of 1 s)
// so a candidate takes over at its next try instead of after leaseDurationSec. If
// onStartedLeading returns a promise (the leader's work), both ends wait for it after the
// abort, so a successor never acts while this process still does.
import type { Logger } from "pino";
import { microTime, isNotFound, LEASES, type KubeClient } from "./client.js";
import { realClock, sleep, type Clock } from "../common/clock.js";
import type { KubeObject } from "./informer.js";

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

/** What the elector needs of a client. */
export type LeaseClient = Pick<KubeClient, "get" | "create" | "replace">;

export interface LeaderElectorOptions {
  readonly namespace: string;
  /** The Lease's name. */
  readonly name: string;
  /** This candidate, unique among them (the pod name). */
  readonly identity: string;
  /** client-go's defaults: 15, 10 and 2 s. */
  readonly leaseDurationSec?: number;
  readonly renewDeadlineSec?: number;
  readonly retryPeriodSec?: number;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly random?: () => number;
}

/** client-go's wait.Jitter factor for the tries to acquire. */
const JITTER = 1.2;

export interface LeaderCallbacks {
  /** This candidate leads until the signal aborts. A returned promise is waited for at the end. */
  onStartedLeading(signal: AbortSignal): void | Promise<void>;
  /** Called once leading ended (after the work's promise settled). */
  onStoppedLeading(): void;
  /** The Lease's holder changed (this candidate included). */
  onNewLeader?(identity: string): void;
}

export class LeaderElector {
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly leaseDurationSec: number;
  private readonly renewDeadlineSec: number;
  private readonly retryPeriodSec: number;
  private readonly log: Logger;
  private readonly stopper = new AbortController();
  private running: Promise<void> | undefined;
  private leading = false;
  private leadership: AbortController | undefined;
  private work: Promise<void> | undefined;
  /** The record last read or written, and when (local clock) it was first seen so. */
  private observed: { readonly record: string; readonly spec: LeaseSpec } | undefined;
  private observedAt = 0;
  private reportedLeader = "";

  constructor(
    private readonly client: LeaseClient,
    private readonly opts: LeaderElectorOptions,
    private readonly callbacks: LeaderCallbacks,
  ) {
    if (!opts.identity) throw new Error("leader election needs an identity");
    this.leaseDurationSec = opts.leaseDurationSec ?? 15;
    this.renewDeadlineSec = opts.renewDeadlineSec ?? 10;
    this.retryPeriodSec = opts.retryPeriodSec ?? 2;
    if (this.leaseDurationSec <= this.renewDeadlineSec) {
      throw new Error("leaseDurationSec must be greater than renewDeadlineSec");
    }
    if (this.renewDeadlineSec <= JITTER * this.retryPeriodSec) {
      throw new Error(`renewDeadlineSec must be greater than ${JITTER} × retryPeriodSec`);
    }
    this.clock = opts.clock ?? realClock;
    this.random = opts.random ?? Math.random;
    this.log = opts.logger.child({
      lease: `${opts.namespace}/${opts.name}`,
      identity: opts.identity,
    });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Runs for leadership, leads, and resolves when leading ended (lost or stop()). */
  run(): Promise<void> {
    this.running ??= this.loop();
    return this.running;
  }

  /** Stops trying, or stops leading and releases the Lease; resolves when done. */
  async stop(): Promise<void> {
    this.stopper.abort();
    await this.running;
  }

  private get retryMs(): number {
    return this.retryPeriodSec * 1000;
  }

  private async loop(): Promise<void> {
    const stop = this.stopper.signal;
    const deadlineMs = this.renewDeadlineSec * 1000;
    let acquired = false;
    while (!stop.aborted && !acquired) {
      acquired = await this.attempt(deadlineMs, stop);
      if (!acquired) await sleep(this.clock, this.retryMs * (1 + this.random() * JITTER), stop);
    }
    if (!acquired) return;
    if (stop.aborted) return this.release();
    this.leading = true;
    this.leadership = new AbortController();
    this.log.info("started leading");
    const failed = (err: unknown) => this.log.error({ err }, "the leader's work failed");
    try {
      this.work = Promise.resolve(this.callbacks.onStartedLeading(this.leadership.signal)).catch(
        failed,
      );
    } catch (err) {
      failed(err);
    }
    for (;;) {
      await sleep(this.clock, this.retryMs, stop);
      if (stop.aborted || !(await this.renew(stop))) break;
    }
    if (stop.aborted) {
      this.log.info("stopping leading");
      await this.stopLeading();
      await this.release();
    } else {
      this.log.warn(
        { renewDeadlineSec: this.renewDeadlineSec },
        "lost the lease: renewing failed until the deadline",
      );
      await this.stopLeading();
    }
  }

  /** Tries to renew, again every retryPeriod, until renewDeadline has passed. */
  private async renew(stop: AbortSignal): Promise<boolean> {
    const deadline = this.clock.now() + this.renewDeadlineSec * 1000;
    for (;;) {
      const left = deadline - this.clock.now();
      if (left <= 0 || stop.aborted) return false;
      if (await this.attempt(left, stop)) return true;
      await sleep(this.clock, Math.min(this.retryMs, deadline - this.clock.now()), stop);
    }
  }

  /** Aborts the leader's work, waits for it, then tells onStoppedLeading. */
  private async stopLeading(): Promise<void> {
    this.leading = false;
    this.leadership?.abort();
    await this.work;
    try {
      this.callbacks.onStoppedLeading();
    } catch (err) {
      this.log.error({ err }, "onStoppedLeading failed");
    }
  }

  /** One round of tryAcquireOrRenew, abandoned after timeoutMs (or when stop aborts). */
  private async attempt(timeoutMs: number, stop: AbortSignal): Promise<boolean> {
    const bound = new AbortController();
    const timer = this.clock.setTimer(
      () => bound.abort(new Error("lease request timed out")),
      timeoutMs,
    );
    const signal = AbortSignal.any([bound.signal, stop]);
    try {
      return await this.tryAcquireOrRenew(signal);
    } catch (err) {
      if (!signal.aborted || bound.signal.aborted) this.log.info({ err }, "lease request failed");
      return false;
    } finally {
      timer.cancel();
    }
  }

  /** client-go's tryAcquireOrRenew: true when this candidate holds the Lease afterwards. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = this.clock.now();
    const spec: LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: this.leaseDurationSec,
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    let lease: Lease;
    try {
      lease = await this.client.get<Lease>(LEASES, namespace, name, { signal });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const created = await this.client.create<Lease>(
        LEASES,
        namespace,
        {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec,
        },
        { signal },
      );
      this.observe(created.spec ?? spec, now);
      return true;
    }
    const old = lease.spec ?? {};
    this.observe(old, now);
    const holder = old.holderIdentity ?? "";
    const durationMs = (old.leaseDurationSeconds ?? 0) * 1000;
    if (holder !== "" && holder !== identity && this.observedAt + durationMs > now) {
      return false;
    }
    const next: LeaseSpec =
      holder === identity
        ? {
            ...old,
            ...spec,
            acquireTime: old.acquireTime ?? spec.acquireTime,
            leaseTransitions: old.leaseTransitions ?? 0,
          }
        : { ...old, ...spec, leaseTransitions: (old.leaseTransitions ?? 0) + 1 };
    const updated = await this.client.replace<Lease>(
      LEASES,
      namespace,
      name,
      { ...lease, spec: next },
      {},
      { signal },
    );
    this.observe(updated.spec ?? next, now);
    return true;
  }

  /** Notes the record read or written; its local time changes only when the record does. */
  private observe(spec: LeaseSpec, now: number): void {
    const record = JSON.stringify([
      spec.holderIdentity ?? "",
      spec.leaseDurationSeconds ?? 0,
      spec.acquireTime ?? "",
      spec.renewTime ?? "",
      spec.leaseTransitions ?? 0,
    ]);
    if (record !== this.observed?.record) {
      this.observed = { record, spec };
      this.observedAt = now;
    }
    const holder = spec.holderIdentity ?? "";
    if (holder !== "" && holder !== this.reportedLeader) {
      this.reportedLeader = holder;
      this.log.info({ leader: holder }, "new leader");
      try {
        this.callbacks.onNewLeader?.(holder);
      } catch (err) {
        this.log.error({ err }, "onNewLeader failed");
      }
    }
  }

  /** Gives the Lease up if this candidate still holds it, so a successor needs not wait. */
  private async release(): Promise<void> {
    const { namespace, name, identity } = this.opts;
    const bound = new AbortController();
    const timer = this.clock.setTimer(() => bound.abort(), this.renewDeadlineSec * 1000);
    try {
      const lease = await this.client.get<Lease>(LEASES, namespace, name, { signal: bound.signal });
      if (lease.spec?.holderIdentity !== identity) return;
      const now = microTime(this.clock.now());
      await this.client.replace<Lease>(
        LEASES,
        namespace,
        name,
        {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: "",
            leaseDurationSeconds: 1,
            acquireTime: now,
            renewTime: now,
          },
        },
        {},
        { signal: bound.signal },
      );
      this.log.info("released the lease");
    } catch (err) {
      this.log.warn({ err }, "could not release the lease; it expires by itself");
    } finally {
      timer.cancel();
    }
  }
}
