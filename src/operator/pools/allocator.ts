// What the pools say about one EipBinding, from the caches: pure, no I/O.
//
// Where an allocation is recorded: in the EipBinding itself. The operator writes the
// address into spec.eipAddr (and the pool into the ALLOCATED_FROM annotation) with one
// conditional patch, as the API server writes a Service's spec.clusterIP. That record is the
// truth because it is the only one: there is no allocation table to drift from it, it is
// in the object the user owns (so a backup and restore of the objects keeps it, which a
// status would not), and a pool's status (allocated, free) is derived from the bindings.
//
// An address is in use while any EipBinding names it in spec.eipAddr or holds it in
// status.eipAddr (what the agents were told). A binding's object goes away only after its
// finalizer saw the agent unbind, so an address is handed out again only once the binding
// holding it is gone and its agent has let it go.
//
// Order: the bindings waiting for one pool are served oldest first (creation time, then
// namespace/name), each taking the lowest free address; so which worker reconciles first
// changes nothing.
import { formatIpv4, parseIpv4 } from "../../common/ipv4.js";
import { olderFirst } from "../placement.js";
import { type EipBinding, keyOf } from "../types.js";
import { type ParsedPool, type PoolSet, admits, contains } from "./parse.js";
import { PoolReason } from "./types.js";

export interface PoolWorld {
  readonly pools: PoolSet;
  /** Every EipBinding in the cache. */
  readonly bindings: readonly EipBinding[];
  /** A namespace's labels; undefined when it is not (yet) known. */
  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined;
  /** Never handed out: node addresses, the agents' gateways. */
  readonly reserved: ReadonlySet<number>;
  /** Allocations written to the API but not yet seen in the cache, by binding key. */
  readonly inFlight: ReadonlyMap<string, number>;
}

export type Verdict =
  | { readonly kind: "proceed" }
  | { readonly kind: "refuse"; readonly reason: PoolReason; readonly message: string }
  | { readonly kind: "allocate"; readonly pool: string; readonly address: string };

const PROCEED: Verdict = { kind: "proceed" };

function refuse(reason: PoolReason, message: string): Verdict {
  return { kind: "refuse", reason, message };
}

/** The address a binding names or was just given, as a number. */
function heldBy(b: EipBinding, inFlight: ReadonlyMap<string, number>): number | undefined {
  const named = b.spec.eipAddr ? parseIpv4(b.spec.eipAddr) : undefined;
  return named ?? inFlight.get(keyOf(b.metadata));
}

/** Every address some binding names, holds, or was just given. */
export function inUse(world: PoolWorld): Set<number> {
  const used = new Set<number>(world.inFlight.values());
  for (const b of world.bindings) {
    for (const text of [b.spec.eipAddr, b.status?.eipAddr]) {
      const a = text ? parseIpv4(text) : undefined;
      if (a !== undefined) used.add(a);
    }
  }
  return used;
}

export function judge(binding: EipBinding, world: PoolWorld): Verdict {
  const { pools } = world;
  const ns = binding.metadata.namespace ?? "";
  const labels = world.namespaceLabels(ns);
  const named = binding.spec.eipAddr;
  if (!pools.fenced) {
    return named
      ? PROCEED
      : refuse(PoolReason.PoolNotFound, "no EipPool exists: name an address in spec.eipAddr");
  }
  if (named) {
    const address = parseIpv4(named);
    if (address === undefined) return PROCEED; // the reconciler says what is wrong with it
    const { poolName } = binding.spec;
    const containing = pools.valid.filter(
      (p) => contains(p, address) && (!poolName || p.name === poolName),
    );
    const pool = containing.find((p) => admits(p, ns, labels));
    if (!pool) {
      const where = containing[0]
        ? `is in EipPool ${containing[0].name}, which does not admit namespace ${ns}`
        : poolName
          ? `is not in EipPool ${poolName}`
          : "is in no EipPool";
      return refuse(PoolReason.NotInPool, `EIP ${named} ${where}`);
    }
    return withinLimit(binding, pool, world) ? PROCEED : overQuota(pool, ns);
  }
  const pool = binding.spec.poolName
    ? pools.valid.find((p) => p.name === binding.spec.poolName)
    : pools.defaultPool;
  if (!pool) {
    const why = binding.spec.poolName
      ? pools.invalid.has(binding.spec.poolName)
        ? `EipPool ${binding.spec.poolName} is invalid: ${pools.invalid.get(binding.spec.poolName)}`
        : `there is no EipPool ${binding.spec.poolName}`
      : "no EipPool is the default: name an address in spec.eipAddr or a pool in spec.poolName";
    return refuse(PoolReason.PoolNotFound, why);
  }
  if (!admits(pool, ns, labels)) {
    return refuse(PoolReason.NotInPool, `EipPool ${pool.name} does not admit namespace ${ns}`);
  }
  return plan(binding, pool, world);
}

function overQuota(pool: ParsedPool, ns: string): Verdict {
  return refuse(
    PoolReason.QuotaExceeded,
    `namespace ${ns} holds its limit of ${pool.limit} addresses from EipPool ${pool.name}`,
  );
}

/** A binding naming a pool's address is within the limit when few enough older ones are. */
function withinLimit(binding: EipBinding, pool: ParsedPool, world: PoolWorld): boolean {
  if (pool.limit === undefined) return true;
  const ns = binding.metadata.namespace ?? "";
  const key = keyOf(binding.metadata);
  const holders = world.bindings
    .filter((b) => {
      if ((b.metadata.namespace ?? "") !== ns) return false;
      const a = heldBy(b, world.inFlight);
      return a !== undefined && contains(pool, a);
    })
    .sort(olderFirst);
  const rank = holders.findIndex((b) => keyOf(b.metadata) === key);
  return rank !== -1 && rank < pool.limit;
}

function poolOf(b: EipBinding, pools: PoolSet): ParsedPool | undefined {
  return b.spec.poolName ? pools.valid.find((p) => p.name === b.spec.poolName) : pools.defaultPool;
}

/** Serves the bindings waiting for `pool` oldest first, until it reaches `binding`. */
function plan(binding: EipBinding, pool: ParsedPool, world: PoolWorld): Verdict {
  const key = keyOf(binding.metadata);
  const used = inUse(world);
  const held = new Map<string, number>(); // per namespace, this pool's addresses held
  const waiting: EipBinding[] = [];
  for (const b of world.bindings) {
    const ns = b.metadata.namespace ?? "";
    const a = heldBy(b, world.inFlight);
    if (a !== undefined) {
      if (contains(pool, a)) held.set(ns, (held.get(ns) ?? 0) + 1);
    } else if (
      !b.metadata.deletionTimestamp &&
      poolOf(b, world.pools) === pool &&
      admits(pool, ns, world.namespaceLabels(ns))
    ) {
      waiting.push(b);
    }
  }
  waiting.sort(olderFirst);
  const free = freeAddresses(pool, used, world.reserved);
  for (const b of waiting) {
    const ns = b.metadata.namespace ?? "";
    const mine = keyOf(b.metadata) === key;
    if (pool.limit !== undefined && (held.get(ns) ?? 0) >= pool.limit) {
      if (mine) return overQuota(pool, ns);
      continue;
    }
    const next = free.next();
    if (next.done) {
      // Every binding from here on, this one included, waits for an address.
      return refuse(
        PoolReason.PoolExhausted,
        `EipPool ${pool.name} has no free address (${pool.size} in all); waiting for one`,
      );
    }
    if (mine) return { kind: "allocate", pool: pool.name, address: formatIpv4(next.value) };
    held.set(ns, (held.get(ns) ?? 0) + 1);
  }
  return PROCEED; // not waiting (being deleted): nothing to allocate
}

/** The pool's free addresses, lowest first. */
export function* freeAddresses(
  pool: ParsedPool,
  used: ReadonlySet<number>,
  reserved: ReadonlySet<number>,
): Generator<number, void> {
  for (const b of pool.blocks) {
    for (let a = b.start; a <= b.end; a++) if (!used.has(a) && !reserved.has(a)) yield a;
  }
}

/** A pool's status numbers: addresses held by bindings, and those left to hand out. */
export function usage(
  pool: ParsedPool,
  used: ReadonlySet<number>,
  reserved: ReadonlySet<number>,
): { allocated: number; free: number } {
  let allocated = 0;
  let blocked = 0;
  for (const a of used) if (contains(pool, a)) allocated++;
  for (const a of reserved) if (!used.has(a) && contains(pool, a)) blocked++;
  return { allocated, free: pool.size - allocated - blocked };
}
