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
import type { AddressIndex } from "./address-index.js";
import { type ParsedPool, type PoolSet, admits, contains } from "./parse.js";
import { PoolReason } from "./types.js";

export interface PoolWorld {
  readonly pools: PoolSet;
  /** What the bindings in the cache hold, and what was just allocated (address-index.ts). */
  readonly index: AddressIndex;
  /** A namespace's labels; undefined when it is not (yet) known. */
  namespaceLabels(namespace: string): Readonly<Record<string, string>> | undefined;
  /** Never handed out: node addresses, the agents' gateways. */
  readonly reserved: ReadonlySet<number>;
}

export type Verdict =
  | { readonly kind: "proceed" }
  | { readonly kind: "refuse"; readonly reason: PoolReason; readonly message: string }
  | { readonly kind: "allocate"; readonly pool: string; readonly address: string };

const PROCEED: Verdict = { kind: "proceed" };

function refuse(reason: PoolReason, message: string): Verdict {
  return { kind: "refuse", reason, message };
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

/** The namespace's bindings holding an address of the pool, oldest first. */
function holdersOf(pool: ParsedPool, ns: string, index: AddressIndex): EipBinding[] {
  return index
    .holdersIn(ns)
    .filter((b) => {
      const a = index.heldBy(keyOf(b.metadata));
      return a !== undefined && contains(pool, a);
    })
    .sort(olderFirst);
}

/** A binding naming a pool's address is within the limit when few enough older ones are. */
function withinLimit(binding: EipBinding, pool: ParsedPool, world: PoolWorld): boolean {
  if (pool.limit === undefined) return true;
  const key = keyOf(binding.metadata);
  const holders = holdersOf(pool, binding.metadata.namespace ?? "", world.index);
  const rank = holders.findIndex((b) => keyOf(b.metadata) === key);
  return rank !== -1 && rank < pool.limit;
}

/** The pool a binding naming no address asks for: its poolName's, or the default. */
export function poolOf(b: EipBinding, pools: PoolSet): ParsedPool | undefined {
  return b.spec.poolName ? pools.valid.find((p) => p.name === b.spec.poolName) : pools.defaultPool;
}

/**
 * Serves the bindings waiting for `pool` oldest first, until it reaches `binding`: each
 * older one served takes the next free address, so the binding gets the one it would get
 * whichever order the workers run in. Walks only the waiting bindings older than this one.
 */
function plan(binding: EipBinding, pool: ParsedPool, world: PoolWorld): Verdict {
  const { index } = world;
  const key = keyOf(binding.metadata);
  if (!index.isWaiting(key)) return PROCEED; // being deleted, or given one already
  const held = new Map<string, number>(); // per namespace, this pool's addresses held
  const heldIn = (ns: string) => {
    let n = held.get(ns);
    if (n === undefined) held.set(ns, (n = holdersOf(pool, ns, index).length));
    return n;
  };
  const free = index.free(pool, world.reserved);
  for (const b of index.waiting) {
    const ns = b.metadata.namespace ?? "";
    if (poolOf(b, world.pools) !== pool || !admits(pool, ns, world.namespaceLabels(ns))) continue;
    const mine = keyOf(b.metadata) === key;
    if (pool.limit !== undefined && heldIn(ns) >= pool.limit) {
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
    if (pool.limit !== undefined) held.set(ns, heldIn(ns) + 1);
  }
  return PROCEED;
}

/** A pool's status numbers: addresses held by bindings, and those left to hand out. */
export function usage(
  pool: ParsedPool,
  index: AddressIndex,
  reserved: ReadonlySet<number>,
): { allocated: number; free: number } {
  let allocated = 0;
  let blocked = 0;
  for (const a of index.used()) if (contains(pool, a)) allocated++;
  for (const a of reserved) if (!index.isUsed(a) && contains(pool, a)) blocked++;
  return { allocated, free: pool.size - allocated - blocked };
}
