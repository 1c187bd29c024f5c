// The pools in the operator: the one hook the reconciler calls before placing a binding
// (check), the allocation write, the re-queueing of bindings the pools' changes concern, and
// the pools' status. Only the leader runs it (it is built with the controller).
//
// Allocation is serialized in this process (one check at a time), and an address written to
// a binding counts as in use until the cache shows it (inFlight), so two workers never hand
// out one address twice. The patch carries the binding's resourceVersion: a binding changed
// meanwhile is not overwritten, and its next reconcile decides again.
import type { Logger } from "pino";
import { parseIpv4 } from "../../common/ipv4.js";
import type { CacheEvent, ObjectCache } from "../controller.js";
import type { Recorder } from "../reconciler.js";
import type { Condition, EipBinding, KubeNode } from "../types.js";
import { keyOf } from "../types.js";
import { type PoolWorld, inUse, judge, usage } from "./allocator.js";
import { poolSet } from "./parse.js";
import type { EipPool, EipPoolStatus, Namespace, PoolReason } from "./types.js";

/** What the reconciler is told: go on, stop here (allocated: its update brings it back), or refuse. */
export type PoolCheck =
  | { readonly kind: "proceed" }
  | { readonly kind: "allocated" }
  | { readonly kind: "refuse"; readonly reason: PoolReason; readonly message: string };

export interface PoolChecks {
  check(binding: EipBinding): Promise<PoolCheck>;
}

export interface PoolWriter {
  /** Writes spec.eipAddr and the ALLOCATED_FROM annotation, conditional on resourceVersion. */
  allocate(binding: EipBinding, pool: string, address: string): Promise<void>;
  patchPoolStatus(pool: EipPool, status: EipPoolStatus): Promise<void>;
}

export interface PoolGateDeps {
  readonly pools: ObjectCache<EipPool>;
  readonly namespaces: ObjectCache<Namespace>;
  readonly bindings: ObjectCache<EipBinding>;
  readonly nodes: ObjectCache<KubeNode>;
  readonly writer: PoolWriter;
  readonly events: Recorder;
  readonly enqueue: (key: string) => void;
  /** Never handed out, beside the node addresses (the agents' gateways). */
  readonly reserved: readonly string[];
  readonly logger: Logger;
  /** How long pool status writes wait to be batched. */
  readonly statusDelayMs?: number;
  readonly now?: () => Date;
}

export class PoolGate implements PoolChecks {
  private readonly inFlight = new Map<string, number>();
  private lock: Promise<unknown> = Promise.resolve();
  private statusTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly deps: PoolGateDeps) {
    deps.pools.onEvent((ev) => {
      // Our own status writes change nothing a binding depends on.
      if (ev.type === "modified" && ev.old?.metadata.generation === ev.obj.metadata.generation) {
        return;
      }
      // Fences, defaults and limits may all have changed: every binding decides again.
      for (const b of deps.bindings.list()) deps.enqueue(keyOf(b.metadata));
      this.scheduleStatus();
    });
    deps.namespaces.onEvent((ev) => this.onNamespace(ev));
    deps.bindings.onEvent((ev) => this.onBinding(ev));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.statusTimer);
  }

  check(binding: EipBinding): Promise<PoolCheck> {
    const run = this.lock.then(() => this.checkNow(binding));
    this.lock = run.catch(() => {});
    return run;
  }

  private world(): PoolWorld {
    const reserved = new Set<number>();
    for (const text of this.deps.reserved) {
      const a = parseIpv4(text);
      if (a !== undefined) reserved.add(a);
    }
    for (const n of this.deps.nodes.list()) {
      for (const { address } of n.status?.addresses ?? []) {
        const a = parseIpv4(address);
        if (a !== undefined) reserved.add(a);
      }
    }
    return {
      pools: poolSet(this.deps.pools.list()),
      bindings: this.deps.bindings.list(),
      namespaceLabels: (ns) => this.deps.namespaces.get(ns)?.metadata.labels,
      reserved,
      inFlight: this.inFlight,
    };
  }

  private async checkNow(binding: EipBinding): Promise<PoolCheck> {
    const current = this.deps.bindings.get(keyOf(binding.metadata)) ?? binding;
    const verdict = judge(current, this.world());
    if (verdict.kind === "proceed") return verdict;
    if (verdict.kind === "refuse") {
      const ready = current.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.reason !== verdict.reason || ready.message !== verdict.message) {
        this.deps.events.record(current, "Warning", verdict.reason, "Allocate", verdict.message);
      }
      return verdict;
    }
    await this.deps.writer.allocate(current, verdict.pool, verdict.address);
    this.inFlight.set(keyOf(current.metadata), parseIpv4(verdict.address) as number);
    this.deps.events.record(
      current,
      "Normal",
      "Allocated",
      "Allocate",
      `EIP ${verdict.address} from EipPool ${verdict.pool}`,
    );
    this.scheduleStatus();
    return { kind: "allocated" };
  }

  private onBinding(ev: CacheEvent<EipBinding>): void {
    const addrOf = (b: EipBinding | undefined) =>
      `${b?.spec.eipAddr ?? ""}|${b?.status?.eipAddr ?? ""}`;
    if (ev.type === "deleted" || ev.obj.spec.eipAddr) this.inFlight.delete(ev.key);
    const freed =
      ev.type === "deleted" || (ev.old !== undefined && addrOf(ev.old) !== addrOf(ev.obj));
    if (ev.type !== "modified" || freed) this.scheduleStatus();
    if (!freed) return;
    // An address may have come free: the bindings waiting for one decide again (oldest first
    // is the allocator's order, whichever of them runs first).
    for (const b of this.deps.bindings.list()) {
      if (!b.spec.eipAddr) this.deps.enqueue(keyOf(b.metadata));
    }
  }

  private onNamespace(ev: CacheEvent<Namespace>): void {
    if (
      ev.type === "modified" &&
      JSON.stringify(ev.old?.metadata.labels ?? {}) === JSON.stringify(ev.obj.metadata.labels ?? {})
    ) {
      return;
    }
    for (const b of this.deps.bindings.list()) {
      if (b.metadata.namespace === ev.obj.metadata.name) this.deps.enqueue(keyOf(b.metadata));
    }
  }

  private scheduleStatus(): void {
    if (this.stopped || this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.writeStatuses().catch((err: unknown) => {
        this.deps.logger.warn(
          { err: (err as Error).message },
          "pool status: write failed; retrying",
        );
        setTimeout(() => this.scheduleStatus(), 1000).unref();
      });
    }, this.deps.statusDelayMs ?? 200);
    this.statusTimer.unref();
  }

  /** Each pool's status, derived from the bindings: allocated, free, and whether it is valid. */
  async writeStatuses(): Promise<void> {
    const world = this.world();
    const used = inUse(world);
    const now = (this.deps.now?.() ?? new Date()).toISOString();
    for (const pool of this.deps.pools.list()) {
      const parsed = world.pools.valid.find((p) => p.name === pool.metadata.name);
      const error = world.pools.invalid.get(pool.metadata.name);
      const counts = parsed ? usage(parsed, used, world.reserved) : { allocated: 0, free: 0 };
      const previous = pool.status?.conditions?.find((c) => c.type === "Valid");
      const status: Condition["status"] = parsed ? "True" : "False";
      const valid: Condition = {
        type: "Valid",
        status,
        observedGeneration: pool.metadata.generation ?? 0,
        lastTransitionTime: previous?.status === status ? previous.lastTransitionTime : now,
        reason: parsed ? "Valid" : "Invalid",
        message: parsed
          ? `${parsed.size} addresses`
          : `EipPool ${pool.metadata.name} is invalid: ${error}`,
      };
      const next: EipPoolStatus = {
        ...counts,
        observedGeneration: pool.metadata.generation ?? 0,
        conditions: [valid],
      };
      const s = pool.status;
      if (
        s?.allocated === next.allocated &&
        s?.free === next.free &&
        s?.observedGeneration === next.observedGeneration &&
        previous?.status === valid.status &&
        previous.message === valid.message
      ) {
        continue;
      }
      await this.deps.writer.patchPoolStatus(pool, next);
    }
  }
}
