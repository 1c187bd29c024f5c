// The operator's control loop: cache events -> a de-duplicating work queue -> workers that
// reconcile one EipBinding at a time per key -> status and Events; and a periodic
// anti-entropy pass over every agent. The caches and the queue come in through narrow
// interfaces (the informers and the work queue of src/kube; fakes in unit tests).
//
// What triggers a reconcile: any change to an EipBinding but its status (our own writes
// trigger nothing); a VMI whose phase, node or address changed (the bindings naming it); a
// Node added, removed or whose InternalIP or Ready status changed (the bindings on it or
// whose VMI is on it), or whose addresses include a binding's EIP (before or after);
// the deletion of an EipBinding (the others naming its EIP: one may take it over); and
// anti-entropy finding an agent without a binding it should hold.
import type { Logger } from "pino";
import { canonicalIpv4 } from "../common/ipv4.js";
import type { AgentPool } from "./agents.js";
import {
  type AgentView,
  desiredByNode,
  planAntiEntropy,
  recordedBindings,
} from "./anti-entropy.js";
import { type Unreachable, planDataplaneUpdates } from "./dataplane-status.js";
import type { OperatorMetrics, ReconcileResult } from "./metrics.js";
import { nodeAddress } from "./placement.js";
import type { PoolChecks } from "./pools/gate.js";
import {
  type BindingWriter,
  type Caches,
  type Recorder,
  Reconciler,
  RetryLater,
  writeStatus,
} from "./reconciler.js";
import { type EipBinding, FINALIZER, type KubeNode, type Vmi, keyOf } from "./types.js";
import { objectFields, withLogFields } from "../common/logger.js";

export interface CacheEvent<T> {
  readonly type: "added" | "modified" | "deleted";
  readonly key: string;
  readonly obj: T;
  readonly old?: T;
}

/** An informer's cache as the controller uses it. */
export interface ObjectCache<T> {
  get(key: string): T | undefined;
  list(): T[];
  readonly synced: boolean;
  onEvent(handler: (ev: CacheEvent<T>) => void): void;
}

/** A work queue of keys: de-duplicated, with per-key backoff. */
export interface KeyQueue {
  add(key: string): void;
  addRateLimited(key: string): void;
  forget(key: string): void;
  get(): Promise<string | undefined>;
  done(key: string): void;
  readonly length: number;
}

export interface ControllerDeps {
  readonly bindings: ObjectCache<EipBinding>;
  readonly vmis: ObjectCache<Vmi>;
  readonly nodes: ObjectCache<KubeNode>;
  readonly queue: KeyQueue;
  readonly agents: AgentPool;
  readonly writer: BindingWriter;
  readonly events: Recorder;
  readonly metrics: OperatorMetrics;
  readonly logger: Logger;
  readonly workers: number;
  readonly antiEntropyMs: number;
  readonly nodeNotReadyGraceMs: number;
  readonly pools?: PoolChecks;
}

/** Concurrent agent listings in one anti-entropy pass. */
const LIST_CONCURRENCY = 16;

export class Controller {
  private readonly byVmi = new Map<string, Set<string>>();
  private readonly byEip = new Map<string, Set<string>>();
  private readonly reconciler: Reconciler;
  private unwanted: ReadonlySet<string> = new Set();
  private stopped = false;

  constructor(private readonly deps: ControllerDeps) {
    const caches: Caches = {
      binding: (key) => deps.bindings.get(key),
      bindingsNamingEip: (eip) =>
        [...(this.byEip.get(eip) ?? [])].flatMap((k) => deps.bindings.get(k) ?? []),
      vmi: (ns, name) => deps.vmis.get(`${ns}/${name}`),
      node: (name) => deps.nodes.get(name),
      allNodes: () => deps.nodes.list(),
    };
    const counted = (op: "bind" | "unbind") => async (a: string, e: string, v: string) => {
      const r = await deps.agents[op](a, e, v);
      deps.metrics.agentCalls.inc({
        op,
        result: r.ok ? "ok" : r.unreachable ? "unreachable" : "refused",
      });
      return r;
    };
    this.reconciler = new Reconciler({
      caches,
      agents: {
        bind: counted("bind"),
        unbind: counted("unbind"),
        list: (address) => deps.agents.list(address),
        state: (address, eip, vmi) => deps.agents.state(address, eip, vmi),
      },
      writer: deps.writer,
      events: deps.events,
      logger: deps.logger,
      nodeNotReadyGraceMs: deps.nodeNotReadyGraceMs,
      ...(deps.pools ? { pools: deps.pools } : {}),
    });
    deps.bindings.onEvent((ev) => this.onBinding(ev));
    deps.vmis.onEvent((ev) => this.onVmi(ev));
    deps.nodes.onEvent((ev) => this.onNode(ev));
    deps.metrics.bindings.reset();
  }

  get synced(): boolean {
    return this.deps.bindings.synced && this.deps.vmis.synced && this.deps.nodes.synced;
  }

  /** Runs the workers and the anti-entropy loop until stop(). */
  async run(): Promise<void> {
    const workers = Array.from({ length: this.deps.workers }, () => this.worker());
    const entropy = this.antiEntropyLoop();
    await Promise.all([...workers, entropy]);
  }

  stop(): void {
    this.stopped = true;
  }

  /** Counts of EipBindings by their Ready reason, for the bindings gauge. */
  countByReason(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const b of this.deps.bindings.list()) {
      const reason = b.status?.conditions?.find((c) => c.type === "Ready")?.reason ?? "Pending";
      counts.set(reason, (counts.get(reason) ?? 0) + 1);
    }
    return counts;
  }

  private enqueue(key: string): void {
    this.deps.queue.add(key);
  }

  private index(
    map: Map<string, Set<string>>,
    value: string | undefined,
    key: string,
    add: boolean,
  ) {
    if (value === undefined) return;
    const set = map.get(value) ?? new Set<string>();
    if (add) set.add(key);
    else set.delete(key);
    if (set.size === 0) map.delete(value);
    else map.set(value, set);
  }

  private onBinding(ev: CacheEvent<EipBinding>): void {
    const vmiOf = (b: EipBinding) => `${b.metadata.namespace ?? ""}/${b.spec.vmiName}`;
    const eipOf = (b: EipBinding) => canonicalIpv4(b.spec.eipAddr ?? "") ?? b.spec.eipAddr;
    if (ev.old) {
      this.index(this.byVmi, vmiOf(ev.old), ev.key, false);
      this.index(this.byEip, eipOf(ev.old), ev.key, false);
    }
    if (ev.type !== "deleted") {
      this.index(this.byVmi, vmiOf(ev.obj), ev.key, true);
      this.index(this.byEip, eipOf(ev.obj), ev.key, true);
    }
    if (ev.type === "deleted") {
      this.index(this.byVmi, vmiOf(ev.obj), ev.key, false);
      this.index(this.byEip, eipOf(ev.obj), ev.key, false);
      // The EIP is free: another binding naming it may take it over.
      for (const k of this.byEip.get(eipOf(ev.obj) ?? "") ?? []) this.enqueue(k);
      return;
    }
    if (ev.type === "modified" && ev.old && onlyOurWrites(ev.old, ev.obj)) return;
    // An allocation's write: the reconcile that made it went on with the object written.
    if (this.deps.pools?.ownAllocation(ev)) return;
    this.enqueue(ev.key);
    if (ev.old && eipOf(ev.old) !== eipOf(ev.obj)) {
      for (const k of this.byEip.get(eipOf(ev.old) ?? "") ?? []) this.enqueue(k);
    }
  }

  private onVmi(ev: CacheEvent<Vmi>): void {
    if (ev.type === "modified" && ev.old && !placementChanged(ev.old, ev.obj)) return;
    for (const k of this.byVmi.get(ev.key) ?? []) this.enqueue(k);
  }

  private onNode(ev: CacheEvent<KubeNode>): void {
    // A binding whose EIP a Node gains (or loses) as its address is refused (or may bind).
    const now = nodeAddresses(ev.obj);
    const before = ev.old ? nodeAddresses(ev.old) : [];
    if (ev.type !== "modified" || now.join() !== before.join()) {
      for (const address of new Set([...now, ...before])) {
        for (const k of this.byEip.get(address) ?? []) this.enqueue(k);
      }
    }
    if (
      ev.type === "modified" &&
      ev.old &&
      nodeAddress(ev.old) === nodeAddress(ev.obj) &&
      readyOf(ev.old) === readyOf(ev.obj)
    ) {
      return;
    }
    const name = ev.obj.metadata.name;
    for (const b of this.deps.bindings.list()) {
      const vmi = this.deps.vmis.get(`${b.metadata.namespace ?? ""}/${b.spec.vmiName}`);
      if (b.status?.nodeName === name || vmi?.status?.nodeName === name) {
        this.enqueue(keyOf(b.metadata));
      }
    }
  }

  private async worker(): Promise<void> {
    const { queue, metrics, logger } = this.deps;
    for (;;) {
      const key = await queue.get();
      if (key === undefined || this.stopped) return;
      const started = performance.now();
      let result: ReconcileResult = "success";
      try {
        await withLogFields(objectFields(key), () => this.reconciler.reconcile(key));
        queue.forget(key);
      } catch (err) {
        // The status says why already (RetryLater); anything else is logged here.
        const retry = err instanceof RetryLater;
        result = retry ? "retry" : "error";
        const about = objectFields(key);
        if (retry)
          logger.info({ ...about, reason: (err as Error).message }, "reconcile: retrying later");
        else logger.error({ ...about, err }, "reconcile failed; retrying");
        queue.addRateLimited(key);
      } finally {
        metrics.reconciled(result, (performance.now() - started) / 1000);
        queue.done(key);
      }
    }
  }

  private async antiEntropyLoop(): Promise<void> {
    while (!this.stopped) {
      await sleep(this.deps.antiEntropyMs, () => this.stopped);
      if (this.stopped) return;
      if (!this.synced) continue;
      try {
        await this.antiEntropy();
      } catch (err) {
        this.deps.logger.error({ err }, "anti-entropy pass failed");
      }
    }
  }

  /** One pass: ask every agent what it holds and fix the differences. */
  async antiEntropy(): Promise<{ missing: number; removed: number }> {
    const { agents, logger, metrics } = this.deps;
    const nodes = this.deps.nodes.list().flatMap((n) => {
      const address = nodeAddress(n);
      return address ? [{ node: n.metadata.name, address }] : [];
    });
    agents.retain(new Set(nodes.map((n) => n.address)));
    const views: AgentView[] = [];
    const unreachable: Unreachable[] = [];
    let next = 0;
    const lister = async () => {
      while (next < nodes.length) {
        const n = nodes[next++] as { node: string; address: string };
        try {
          views.push({ ...n, held: await agents.list(n.address) });
        } catch (err) {
          unreachable.push({ ...n, reason: errorText(err) });
          logger.warn(
            { node: n.node, address: n.address, err },
            "anti-entropy: agent not reachable; its node is checked next time",
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, nodes.length) }, lister));
    // Desired state from the caches as they are after the agents answered.
    const bindings = this.deps.bindings.list();
    const desired = desiredByNode(
      bindings,
      (ns, name) => this.deps.vmis.get(`${ns}/${name}`),
      (name) => this.deps.nodes.get(name),
    );
    const plan = planAntiEntropy(desired, views, recordedBindings(bindings), this.unwanted);
    this.unwanted = plan.unwanted;
    for (const key of plan.enqueue) this.enqueue(key);
    for (const u of plan.unbind) {
      const r = await agents.unbind(u.address, u.eip, u.vmi);
      logger.warn(
        { node: u.node, eip: u.eip, vmi: u.vmi, ok: r.ok, ...(r.ok ? {} : { err: r.reason }) },
        "anti-entropy: unbound a binding no EipBinding wants",
      );
    }
    if (plan.lost.length > 0) {
      logger.warn({ keys: plan.lost }, "anti-entropy: agents lack bindings; reconciling");
    }
    metrics.antiEntropyRepairs.inc({ kind: "missing" }, plan.lost.length);
    metrics.antiEntropyRepairs.inc({ kind: "unwanted" }, plan.unbind.length);
    await this.updateDataplane(planDataplaneUpdates(bindings, desired, views, unreachable));
    return { missing: plan.lost.length, removed: plan.unbind.length };
  }

  /** Writes what the agents read back into the statuses (dataplane-status.ts). */
  private async updateDataplane(updates: ReturnType<typeof planDataplaneUpdates>) {
    const { writer, events, logger } = this.deps;
    for (const { binding, outcome } of updates) {
      const was = binding.status?.conditions?.find((c) => c.type === "Ready")?.reason;
      try {
        // Conditional: a reconcile that wrote meanwhile knows better; next pass tries again.
        const wrote = await writeStatus({ writer, events }, binding, outcome, {
          conditional: true,
        });
        if (wrote && outcome.reason === "AgentUnavailable" && was !== "AgentUnavailable") {
          events.record(binding, "Warning", outcome.reason, "ReadBack", outcome.message);
        }
      } catch (err) {
        logger.info(
          { ...objectFields(keyOf(binding.metadata)), err: errorText(err) },
          "anti-entropy: status not updated (changed meanwhile); next pass",
        );
      }
    }
  }
}

/**
 * True when nothing changed but the status, or but our finalizer being added: both are the
 * reconciler's own writes, made in the pass that goes on after them.
 */
function onlyOurWrites(a: EipBinding, b: EipBinding): boolean {
  const before = a.metadata.finalizers ?? [];
  const after = b.metadata.finalizers ?? [];
  const finalizersSame =
    JSON.stringify(before) === JSON.stringify(after) ||
    JSON.stringify([...before, FINALIZER]) === JSON.stringify(after);
  return (
    a.metadata.generation === b.metadata.generation &&
    a.metadata.deletionTimestamp === b.metadata.deletionTimestamp &&
    finalizersSame &&
    a.spec.eipAddr === b.spec.eipAddr &&
    a.spec.vmiName === b.spec.vmiName
  );
}

/** A Node's InternalIP and ExternalIP addresses, canonical. */
function nodeAddresses(n: KubeNode): string[] {
  return (n.status?.addresses ?? []).flatMap((a) => {
    const c =
      a.type === "InternalIP" || a.type === "ExternalIP" ? canonicalIpv4(a.address) : undefined;
    return c ? [c] : [];
  });
}

function readyOf(n: KubeNode): string | undefined {
  return n.status?.conditions?.find((c) => c.type === "Ready")?.status;
}

function placementChanged(a: Vmi, b: Vmi): boolean {
  return (
    a.status?.phase !== b.status?.phase ||
    a.status?.nodeName !== b.status?.nodeName ||
    a.status?.interfaces?.[0]?.ipAddress !== b.status?.interfaces?.[0]?.ipAddress
  );
}

function errorText(err: unknown): string {
  const e = err as { details?: string; message?: string };
  return e.details || e.message || String(err);
}

/** Sleeps `ms`, waking early (every 200 ms at most) once `stop()` says so. */
async function sleep(ms: number, stop: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!stop() && Date.now() < end) {
    await new Promise((r) => setTimeout(r, Math.min(200, end - Date.now())));
  }
}
