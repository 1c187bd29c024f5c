// The agent's one apply loop: the only writer of the node's saved bindings and of every
// kernel table we own.
//
// Requests stage their change in the BindingTable synchronously and then wait on sync();
// all requests that arrive while an apply runs share the next one, so N concurrent binds
// cost one state-file write and one batch per subsystem. One apply: save the staged
// changes and only then commit them to the table (a failed save drops them all and fails
// every waiting request with NotSavedError: nothing changed), plan the desired kernel
// state, then let each subsystem write its difference, in order NAT (sets and rules, or
// our nftables table) -> ip rules/routes/addresses/proxy entries -> sysctls. A
// kernel failure rejects the waiting requests with the failing phase; their changes are
// saved and stay wanted, and the loop retries by itself with exponential backoff and
// jitter until the kernel matches again (the table shows them pending until then). Every
// resync interval the kernel is re-read and what drifted is repaired.
// The subsystems write in order on the first apply, on re-reads and after a failure (our
// sets must exist before rules name them); otherwise their batches run at once.
//
// An announcer (BGP, ARP) goes around the kernel subsystems: it withdraws what is no longer bound
// before they remove the NAT (a router must not send traffic to a node that no longer
// forwards it) and announces what is new after they added it. A failing announcer does not
// hold up the kernel: its error (phase 5) is reported once the kernel is written.
//
// The periodic re-read is slow on a big node (iptables-save of 20,000 rules), so it runs
// outside the loop, while requests keep being served: the snapshots are handed to the
// loop, which adopts them as the managers' belief and writes what differs, but only if no
// apply ran while they were read (else they may be stale: the next round reads again). A
// node too busy for that gets its re-read inside the loop every few rounds.
import type { Logger } from "pino";
import { backoffDelay } from "../common/backoff.js";
import { type Clock, type Timer, realClock } from "../common/clock.js";
import { KernelError, Phase } from "../kernel/manager.js";
import type { Subsystem } from "../kernel/subsystem.js";
import type { DesiredState } from "../model/desired.js";
import type { BindingTable } from "./binding-table.js";
import type { AgentMetrics } from "./metrics.js";
import { type PlanConfig, answeringOnly, plan } from "../model/plan.js";
import type { BindingStore } from "./store.js";
import type { ReadBackSink } from "./readback.js";

/** Resync rounds whose background read an apply may spoil before one reads in the loop. */
const SPOILED_ROUNDS_MAX = 3;

export interface DataplaneOptions {
  readonly table: BindingTable;
  readonly store: Pick<BindingStore, "save" | "record">;
  readonly config: PlanConfig;
  readonly subsystems: readonly Subsystem[];
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  /** The clock of the retries, the resync and the probes; the real one by default. */
  readonly clock?: Clock;
  /** Told of every background read no apply spoiled, and of the apply that followed it. */
  readonly readBack?: ReadBackSink;
}

interface Waiter {
  resolve(): void;
  reject(err: KernelError): void;
}

export class Dataplane {
  private readonly waiters: Waiter[] = [];
  private pending = false;
  private running = false;
  private rereadNext = true;
  private snapshotNext = true;
  private appliedVersion = -1;
  private failures = 0;
  private retryTimer: Timer | undefined;
  private resyncTimer: Timer | undefined;
  private stopped = false;
  private lastError: KernelError | undefined;
  private idle: Promise<void> = Promise.resolve();
  /** Set after an in-order apply succeeded: our sets and chains exist. */
  private primed = false;
  /** The EIPs the last apply that succeeded wrote; undefined when unknown. */
  private held: ReadonlySet<string> | undefined;
  /** Counts applies started: a background read is valid only if it did not move. */
  private applies = 0;
  private readingInBackground = false;
  private spoiledRounds = 0;
  /** When the apply running now started (probe clock); undefined while none runs. */
  private applyStartedAt: number | undefined;
  /** Set once an apply succeeded: the kernel was restored from the bindings. */
  private restored = false;

  /** The bindings' version the last read handed to `readBack` held; -1 before it. */
  private readBackVersion = -1;
  /** An apply changed the bindings while a read ran: read back again after it. */
  private readBackAgain = false;

  /** Kernel snapshots read in the background, one per subsystem, for the loop to adopt. */
  private snapshots: unknown[] | undefined;

  private readonly clock: Clock;

  constructor(private readonly opts: DataplaneOptions) {
    this.clock = opts.clock ?? realClock;
  }

  /** True when the last apply succeeded and nothing is waiting to be written. */
  get inSync(): boolean {
    return this.lastError === undefined && !this.pending && !this.running;
  }

  get error(): KernelError | undefined {
    return this.lastError;
  }

  /**
   * Liveness: undefined while the loop makes progress (idle, waiting to retry, or in an
   * apply that started less than `stallMs` ago), else why not. Every command has a time
   * limit, so only something without one (a hung gRPC peer, a stuck disk) gets here.
   */
  stalled(stallMs: number): string | undefined {
    const started = this.applyStartedAt;
    if (started === undefined) return undefined;
    const ms = this.clock.now() - started;
    return ms > stallMs ? `an apply has been running for ${Math.round(ms / 1000)} s` : undefined;
  }

  /**
   * Readiness: undefined once the kernel was restored and the last apply succeeded, else
   * why not (still restoring, or retrying after a failure, with its phase and error).
   */
  notReady(): string | undefined {
    const err = this.lastError;
    if (err !== undefined) {
      return `retrying after ${this.failures} failed apply(s): phase ${err.phase}: ${err.message}`;
    }
    return this.restored ? undefined : "restoring the kernel state from the bindings";
  }

  /** Resolves once an apply that started after this call has succeeded. */
  sync(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.kick();
    });
  }

  /** Re-reads the kernel and repairs what differs, then resolves (or rejects). */
  resync(): Promise<void> {
    this.rereadNext = true;
    return this.sync();
  }

  /** Starts the periodic re-read. */
  startResync(intervalMs: number): void {
    this.resyncTimer = this.clock.setTimer(() => {
      this.startResync(intervalMs);
      this.backgroundResync().catch(() => {
        // Logged and retried by the loop.
      });
    }, intervalMs);
  }

  /**
   * Re-reads the kernel without holding up requests, then repairs what differs. `verify`:
   * the read-back that follows an apply that changed the bindings (never falls back to a
   * re-read inside the loop).
   */
  async backgroundResync(verify = false): Promise<void> {
    if (this.stopped) return;
    if (this.readingInBackground) {
      if (verify) this.readBackAgain = true;
      return;
    }
    if (!verify && this.spoiledRounds >= SPOILED_ROUNDS_MAX) {
      this.spoiledRounds = 0;
      return this.resync();
    }
    this.readingInBackground = true;
    try {
      await this.idle;
      const before = this.applies;
      const version = this.opts.table.version;
      const snapshots = await Promise.all(this.opts.subsystems.map((s) => s.read()));
      if (this.applies !== before || this.running || this.stopped) {
        // Stale: try again next round rather than read again now (a busy node would read
        // over and over); after a few such rounds the loop re-reads itself.
        this.spoiledRounds++;
        return;
      }
      this.spoiledRounds = 0;
      this.readBackVersion = version;
      this.opts.readBack?.found(snapshots, this.opts.table.list());
      this.snapshots = snapshots;
      try {
        await this.sync();
        this.opts.readBack?.repaired(undefined);
      } catch (err) {
        this.opts.readBack?.repaired((err as Error).message);
        throw err;
      }
    } finally {
      this.readingInBackground = false;
      if (this.readBackAgain && !this.stopped) {
        this.readBackAgain = false;
        this.backgroundResync(true).catch(() => {
          // Logged and retried by the loop.
        });
      }
    }
  }

  /** Stops timers and waits for a running apply to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.resyncTimer?.cancel();
    this.retryTimer?.cancel();
    await this.idle;
  }

  private kick(): void {
    this.pending = true;
    if (this.stopped) {
      // Nothing saves what these requests staged: they changed nothing.
      this.failWaiters(new NotSavedError("the agent is shutting down"));
      return;
    }
    if (!this.running) this.idle = this.loop();
  }

  private async loop(): Promise<void> {
    this.running = true;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    try {
      while (this.pending && !this.stopped) {
        this.pending = false;
        const waiters = this.waiters.splice(0);
        const reread = this.rereadNext || this.lastError !== undefined;
        this.rereadNext = false;
        const snapshots = this.snapshots;
        this.snapshots = undefined;
        this.applies++;
        this.applyStartedAt = this.clock.now();
        try {
          if (snapshots && !reread) {
            this.opts.subsystems.forEach((s, i) => s.adopt(snapshots[i]));
          }
          // After a re-read anything may be missing, sets too: write in order.
          const checked = reread || snapshots !== undefined;
          await this.applyOnce({ reread, ordered: checked || !this.primed, checkDrift: checked });
          this.lastError = undefined;
          this.failures = 0;
          this.restored = true;
          for (const w of waiters) w.resolve();
        } catch (err) {
          this.primed = false;
          const kerr =
            err instanceof KernelError
              ? err
              : new KernelError(Phase.State, `unexpected apply failure: ${String(err)}`, {
                  cause: err,
                });
          this.lastError = kerr;
          this.failures++;
          this.opts.metrics.applyErrors.inc({ phase: String(kerr.phase) });
          this.opts.logger.error(
            { op: "apply", phase: kerr.phase, err: kerr.message, failures: this.failures },
            "apply failed; will retry",
          );
          for (const w of waiters) w.reject(kerr);
          // Their changes were dropped too (discard), as they were checked against these.
          if (kerr instanceof NotSavedError) this.failWaiters(kerr);
          this.scheduleRetry();
        }
      }
    } finally {
      this.running = false;
      this.applyStartedAt = undefined;
      this.opts.metrics.inSync.set(this.inSync ? 1 : 0);
      // Read back what changed (a fresh bind reads Programmed at once, not at the resync).
      if (
        this.opts.readBack !== undefined &&
        this.lastError === undefined &&
        this.opts.table.version !== this.readBackVersion
      ) {
        this.readBackAgain = true;
        if (!this.readingInBackground) {
          this.readBackAgain = false;
          this.backgroundResync(true).catch(() => {
            // Logged and retried by the loop.
          });
        }
      }
    }
  }

  private failWaiters(err: KernelError): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  private scheduleRetry(): void {
    if (this.stopped || this.retryTimer) return;
    const delay = backoffDelay(this.failures - 1, {
      baseMs: this.opts.retryBaseMs ?? 200,
      maxMs: this.opts.retryMaxMs ?? 30_000,
    });
    this.retryTimer = this.clock.setTimer(() => {
      this.retryTimer = undefined;
      this.kick();
    }, delay);
  }

  /**
   * Lets `subsystems` write their difference from `desired`: in list order, or, once our
   * sets and chains exist, at once (their writes are independent), reporting the lowest
   * failing phase.
   */
  private async syncKernel(
    subsystems: readonly Subsystem[],
    desired: DesiredState,
    options: { reread: boolean },
    ordered: boolean,
    gatesDesired = desired,
  ): Promise<number> {
    const want = (s: Subsystem) => (s.gate === true ? gatesDesired : desired);
    let changes = 0;
    if (ordered) {
      // In order: a new dataplane is written before the old one goes (kernel-subsystems.ts).
      for (const subsystem of subsystems) changes += await subsystem.sync(want(subsystem), options);
      return changes;
    }
    const results = await Promise.allSettled(subsystems.map((s) => s.sync(want(s), options)));
    const failures = results.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (failures.length > 0) {
      this.primed = false;
      throw failures.sort((a, b) => phaseOf(a) - phaseOf(b))[0];
    }
    for (const r of results) if (r.status === "fulfilled") changes += r.value;
    return changes;
  }

  private async applyOnce({
    reread,
    ordered,
    checkDrift,
  }: {
    reread: boolean;
    ordered: boolean;
    checkDrift: boolean;
  }): Promise<void> {
    const { table, store, config, subsystems, metrics, logger } = this.opts;
    const endTimer = metrics.applyDuration.startTimer();
    const staged = table.takeStaged();
    if (staged.changes.length > 0 || this.snapshotNext) {
      try {
        // A fresh snapshot first (it compacts what load replayed) and after a failed save
        // (a failed append may have left part of a line); otherwise only the changes are
        // appended.
        if (this.snapshotNext) await store.save(staged.after);
        else await store.record(staged.changes, staged.after);
        this.snapshotNext = false;
      } catch (err) {
        this.snapshotNext = true;
        table.discard();
        throw new NotSavedError(`saving the bindings failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
      table.commit(staged.changes);
    }
    const version = table.version;
    const bindings = table.list();
    const desired = plan(config, bindings);
    // The stages of subsystem.ts.
    const announcers = subsystems.filter((s) => s.stage === "announce");
    const after = subsystems.filter((s) => s.stage !== "kernel");
    const kernel = subsystems.filter((s) => s.stage === "kernel");
    let changes = 0;
    let announceError: unknown;
    for (const a of announcers) {
      try {
        if (a.withdraw !== undefined) changes += await a.withdraw(desired, { reread });
      } catch (err) {
        announceError ??= err;
      }
    }
    // The gates (subsystem.ts): an EIP that goes stops being answered before its NAT goes,
    // one that comes is answered once its NAT is written; the rest of the gates' state
    // (routes, rules) is written with the NAT.
    const gates = kernel.filter((s) => s.gate === true);
    const nat = kernel.filter((s) => s.gate !== true);
    const held = this.held;
    this.held = undefined; // unknown until this apply succeeds
    const closed = held === undefined ? desired : answeringOnly(desired, held);
    const going =
      held !== undefined && desired.announced.filter((eip) => held.has(eip)).length < held.size;
    if (going) {
      changes += await this.syncKernel(gates, closed, { reread }, ordered);
      changes += await this.syncKernel(nat, desired, { reread }, ordered);
    } else {
      changes += await this.syncKernel([...nat, ...gates], desired, { reread }, ordered, closed);
    }
    if (closed !== desired) {
      changes += await this.syncKernel(gates, desired, { reread: false }, ordered);
    }
    if (ordered) this.primed = true;
    this.held = new Set(desired.announced);
    for (const a of after) {
      try {
        // withdraw() read the speaker already, unless it failed (then this reads again).
        changes += await a.sync(desired, { reread: false });
      } catch (err) {
        announceError ??= err;
      }
    }
    endTimer();
    if (announceError !== undefined) throw announceError;
    metrics.bindings.set(bindings.length);
    if (checkDrift && version === this.appliedVersion && changes > 0) {
      metrics.driftRepairs.inc(changes);
      logger.warn({ op: "resync", changes }, "repaired kernel state that had drifted");
    }
    this.appliedVersion = version;
    table.confirm(version);
  }
}

/**
 * Saving failed, so the table dropped every change not yet saved: the requests waiting
 * changed nothing.
 */
export class NotSavedError extends KernelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(Phase.State, message, options);
  }
}

function phaseOf(err: unknown): number {
  return err instanceof KernelError ? err.phase : Phase.State;
}
