// The pools in the operator: the one hook the reconciler calls before placing a binding
// (check), the allocation write, the re-queueing of bindings the pools' changes concern, and
// the pools' status. Only the leader runs it (it is built with the controller).
//
// An allocation is decided and reserved in the index (address-index.ts) in one synchronous
// step, so two workers never hand out one address twice, and the writes themselves run
// concurrently. The patch carries the binding's resourceVersion (a binding changed meanwhile
// is not overwritten, its next reconcile decides again) and our finalizer, so one write
// does both; the reconciler goes on with the object the API returned. Until the cache shows
// that object the gate answers with it, and the controller is told the cache event of that
// write is ours (ownAllocation): nothing to reconcile again. A waiting binding is woken only
// when an address of its pool is released.
import type { Logger } from "pino";
import { parseIpv4 } from "../../common/ipv4.js";
import type { CacheEvent, ObjectCache } from "../controller.js";
import type { Recorder } from "../reconciler.js";
import type { Condition, EipBinding, KubeNode } from "../types.js";
import { keyOf } from "../types.js";
import { AddressIndex } from "./address-index.js";
import { type PoolWorld, judge, poolOf, usage } from "./allocator.js";
import { type PoolSet, contains, poolSet } from "./parse.js";
import { type EipPool, type EipPoolStatus, type Namespace, type PoolReason } from "./types.js";

/**
 * What the reconciler is told: go on; go on with this object (allocated: its address and
 * our finalizer are written); or refuse.
 */
export type PoolCheck =
  | { readonly kind: "proceed" }
  | { readonly kind: "allocated"; readonly binding: EipBinding }
  | { readonly kind: "refuse"; readonly reason: PoolReason; readonly message: string };

export interface PoolChecks {
  check(binding: EipBinding): Promise<PoolCheck>;
  /** True when a binding's change is exactly an allocation this process wrote and went on with. */
  ownAllocation(ev: CacheEvent<EipBinding>): boolean;
}

export interface PoolWriter {
  /**
   * Writes spec.eipAddr, the ALLOCATED_FROM annotation and our finalizer (when missing),
   * conditional on resourceVersion; resolves to the object written.
   */
  allocate(binding: EipBinding, pool: string, address: string): Promise<EipBinding>;
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
  private readonly index = new AddressIndex();
  /** Allocations written whose object the cache does not show yet, by key. */
  private readonly written = new Map<string, EipBinding>();
  /** Allocations being written or written, until the controller saw their event. */
  private readonly own = new Map<string, string>();
  private pools: PoolSet | undefined;
  private reserved: ReadonlySet<number> | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly deps: PoolGateDeps) {
    deps.pools.onEvent((ev) => {
      // Our own status writes change nothing a binding depends on.
      if (ev.type === "modified" && ev.old?.metadata.generation === ev.obj.metadata.generation) {
        return;
      }
      this.pools = undefined;
      // Fences, defaults and limits may all have changed: every binding decides again.
      for (const b of deps.bindings.list()) deps.enqueue(keyOf(b.metadata));
      this.scheduleStatus();
    });
    deps.nodes.onEvent(() => {
      this.reserved = undefined;
    });
    deps.namespaces.onEvent((ev) => this.onNamespace(ev));
    deps.bindings.onEvent((ev) => this.onBinding(ev));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.statusTimer);
  }

  private world(): PoolWorld {
    this.pools ??= poolSet(this.deps.pools.list());
    if (!this.reserved) {
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
      this.reserved = reserved;
    }
    return {
      pools: this.pools,
      index: this.index,
      namespaceLabels: (ns) => this.deps.namespaces.get(ns)?.metadata.labels,
      reserved: this.reserved,
    };
  }

  async check(binding: EipBinding): Promise<PoolCheck> {
    const key = keyOf(binding.metadata);
    const current = this.deps.bindings.get(key) ?? binding;
    const written = current.spec.eipAddr ? undefined : this.written.get(key);
    if (written) return { kind: "allocated", binding: written }; // newer than the cache
    const verdict = judge(current, this.world());
    if (verdict.kind === "proceed") return verdict;
    if (verdict.kind === "refuse") {
      const ready = current.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.reason !== verdict.reason || ready.message !== verdict.message) {
        this.deps.events.record(current, "Warning", verdict.reason, "Allocate", verdict.message);
      }
      return verdict;
    }
    // Reserved before the first await: no other check can hand out this address.
    this.index.reserve(key, parseIpv4(verdict.address) as number);
    this.own.set(key, verdict.address);
    let updated: EipBinding;
    try {
      updated = await this.deps.writer.allocate(current, verdict.pool, verdict.address);
    } catch (err) {
      this.own.delete(key);
      this.wake(this.index.unreserve(key));
      throw err;
    }
    if (!this.deps.bindings.get(key)?.spec.eipAddr) this.written.set(key, updated);
    this.deps.events.record(
      current,
      "Normal",
      "Allocated",
      "Allocate",
      `EIP ${verdict.address} from EipPool ${verdict.pool}`,
    );
    this.scheduleStatus();
    return { kind: "allocated", binding: updated };
  }

  ownAllocation(ev: CacheEvent<EipBinding>): boolean {
    const address = this.own.get(ev.key);
    const { old, obj } = ev;
    if (address === undefined || ev.type !== "modified" || !old) return false;
    if (old.spec.eipAddr || obj.spec.eipAddr !== address) return false;
    this.own.delete(ev.key);
    return (
      old.metadata.uid === obj.metadata.uid &&
      old.metadata.deletionTimestamp === obj.metadata.deletionTimestamp &&
      old.spec.vmiName === obj.spec.vmiName &&
      old.spec.poolName === obj.spec.poolName
    );
  }

  private onBinding(ev: CacheEvent<EipBinding>): void {
    const gone = ev.type === "deleted";
    const released = this.index.update(ev.key, gone ? undefined : ev.obj);
    if (gone || ev.obj.spec.eipAddr) this.written.delete(ev.key);
    if (gone) this.own.delete(ev.key);
    const addrOf = (b: EipBinding | undefined) =>
      `${b?.spec.eipAddr ?? ""}|${b?.status?.eipAddr ?? ""}`;
    if (ev.type !== "modified" || addrOf(ev.old) !== addrOf(ev.obj)) this.scheduleStatus();
    this.wake(released);
  }

  /** Addresses came free: the bindings waiting for one of their pools decide again. */
  private wake(released: readonly number[]): void {
    if (released.length === 0) return;
    const pools = this.world().pools;
    for (const b of this.index.waiting) {
      const pool = poolOf(b, pools);
      if (pool && released.some((a) => contains(pool, a))) this.deps.enqueue(keyOf(b.metadata));
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
    const now = (this.deps.now?.() ?? new Date()).toISOString();
    for (const pool of this.deps.pools.list()) {
      const parsed = world.pools.valid.find((p) => p.name === pool.metadata.name);
      const error = world.pools.invalid.get(pool.metadata.name);
      const counts = parsed
        ? usage(parsed, world.index, world.reserved)
        : { allocated: 0, free: 0 };
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
