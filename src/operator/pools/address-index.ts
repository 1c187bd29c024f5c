// What the EipBindings hold, kept up to date from the cache's events, so an allocation costs
// no pass over every binding: which addresses are in use (named in spec.eipAddr, held in
// status.eipAddr, or just allocated and not yet in the cache), who holds them per
// namespace (for the limits), and the bindings waiting for an address, oldest first.
//
// An address is in use while anything refers to it (a count per address); update() says
// which addresses it released, the only moment a waiting binding can be served anew. The
// lowest free address of a pool is searched from a hint below which every address is in use
// or reserved; a release (or another reserved set) voids the hints.
import { parseIpv4 } from "../../common/ipv4.js";
import { olderFirst } from "../placement.js";
import { type EipBinding, keyOf } from "../types.js";
import type { ParsedPool } from "./parse.js";

interface Entry {
  readonly binding: EipBinding;
  /** spec.eipAddr and status.eipAddr, parsed (undefined when absent or not an address). */
  readonly spec: number | undefined;
  readonly status: number | undefined;
}

interface Hint {
  readonly generation: number;
  readonly reserved: ReadonlySet<number>;
  /** Every address of the pool below this one is in use or reserved. */
  readonly from: number;
}

const parsed = (text: string | undefined) => (text ? parseIpv4(text) : undefined);

export class AddressIndex {
  private readonly entries = new Map<string, Entry>();
  /** How many references (spec, status, in flight) each address in use has. */
  private readonly refs = new Map<number, number>();
  /** Allocations written (or being written) that the cache does not show yet. */
  private readonly inFlight = new Map<string, number>();
  /** Keys of the bindings holding an address (spec or in flight), by namespace. */
  private readonly holders = new Map<string, Set<string>>();
  private readonly holderNs = new Map<string, string>();
  /** Bindings waiting for an address (none named, none in flight, not deleted), oldest first. */
  private readonly waitingList: EipBinding[] = [];
  private readonly hints = new WeakMap<ParsedPool, Hint>();
  /** Bumped at every release: hints made before it may skip a free address. */
  private generation = 0;

  /** An index of these bindings (tests, and anything built from a list). */
  static of(bindings: Iterable<EipBinding>): AddressIndex {
    const index = new AddressIndex();
    for (const b of bindings) index.update(keyOf(b.metadata), b);
    return index;
  }

  /** The binding's new state (undefined: gone); returns the addresses it released. */
  update(key: string, binding: EipBinding | undefined): number[] {
    const before = this.entries.get(key);
    const released: number[] = [];
    if (before) this.removeWaiting(before.binding);
    let entry: Entry | undefined;
    if (binding) {
      entry = {
        binding,
        spec: parsed(binding.spec.eipAddr),
        status: parsed(binding.status?.eipAddr),
      };
      this.entries.set(key, entry);
      this.ref(entry.spec, 1, released);
      this.ref(entry.status, 1, released);
    } else {
      this.entries.delete(key);
    }
    if (before) {
      this.ref(before.spec, -1, released);
      this.ref(before.status, -1, released);
    }
    // The cache shows the binding's own address now (or the binding is gone): the
    // allocation in flight is over.
    if (!binding || binding.spec.eipAddr) this.dropInFlight(key, released);
    this.placeHolder(key, entry?.binding);
    if (binding && this.waits(key, binding)) this.insertWaiting(binding);
    return released;
  }

  /** An allocation about to be written: in use from now on, the binding no longer waiting. */
  reserve(key: string, address: number): void {
    const released: number[] = [];
    this.dropInFlight(key, released);
    this.inFlight.set(key, address);
    this.ref(address, 1, released);
    const entry = this.entries.get(key);
    if (entry) this.removeWaiting(entry.binding);
    this.placeHolder(key, entry?.binding);
  }

  /** The allocation failed: the address is free again (returned), the binding waits again. */
  unreserve(key: string): number[] {
    const released: number[] = [];
    this.dropInFlight(key, released);
    const entry = this.entries.get(key);
    this.placeHolder(key, entry?.binding);
    if (entry && this.waits(key, entry.binding)) this.insertWaiting(entry.binding);
    return released;
  }

  isUsed(address: number): boolean {
    return this.refs.has(address);
  }

  /** Every address in use. */
  used(): IterableIterator<number> {
    return this.refs.keys();
  }

  /** The address a binding names, or was just given. */
  heldBy(key: string): number | undefined {
    return this.entries.get(key)?.spec ?? this.inFlight.get(key);
  }

  /** The bindings of a namespace that name an address or were just given one. */
  holdersIn(namespace: string): EipBinding[] {
    return [...(this.holders.get(namespace) ?? [])].flatMap((k) => {
      const e = this.entries.get(k);
      return e ? [e.binding] : [];
    });
  }

  /** The bindings waiting for an address, oldest first. */
  get waiting(): readonly EipBinding[] {
    return this.waitingList;
  }

  isWaiting(key: string): boolean {
    const e = this.entries.get(key);
    return e !== undefined && this.waits(key, e.binding);
  }

  /** The pool's free addresses, lowest first (from its hint while the hint holds). */
  *free(pool: ParsedPool, reserved: ReadonlySet<number>): Generator<number, void> {
    const hint = this.hints.get(pool);
    const from =
      hint && hint.generation === this.generation && hint.reserved === reserved ? hint.from : 0;
    let first = true;
    const note = (a: number) => {
      this.hints.set(pool, { generation: this.generation, reserved, from: a });
      first = false;
    };
    for (const b of pool.blocks) {
      for (let a = Math.max(b.start, from); a <= b.end; a++) {
        if (this.refs.has(a) || reserved.has(a)) continue;
        if (first) note(a);
        yield a;
      }
    }
    if (first) note(Infinity);
  }

  private waits(key: string, b: EipBinding): boolean {
    return !b.spec.eipAddr && !b.metadata.deletionTimestamp && !this.inFlight.has(key);
  }

  private ref(address: number | undefined, delta: 1 | -1, released: number[]): void {
    if (address === undefined) return;
    const n = (this.refs.get(address) ?? 0) + delta;
    if (n > 0) {
      this.refs.set(address, n);
      return;
    }
    this.refs.delete(address);
    released.push(address);
    this.generation++;
  }

  private dropInFlight(key: string, released: number[]): void {
    const a = this.inFlight.get(key);
    if (a === undefined) return;
    this.inFlight.delete(key);
    this.ref(a, -1, released);
  }

  private placeHolder(key: string, binding: EipBinding | undefined): void {
    const was = this.holderNs.get(key);
    if (was !== undefined) {
      const keys = this.holders.get(was);
      keys?.delete(key);
      if (keys?.size === 0) this.holders.delete(was);
      this.holderNs.delete(key);
    }
    if (!binding || this.heldBy(key) === undefined) return;
    const ns = binding.metadata.namespace ?? "";
    let keys = this.holders.get(ns);
    if (!keys) this.holders.set(ns, (keys = new Set()));
    keys.add(key);
    this.holderNs.set(key, ns);
  }

  /** Where b is (or would go) in the waiting list: binary search, the order being total. */
  private position(b: EipBinding): number {
    let lo = 0;
    let hi = this.waitingList.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (olderFirst(this.waitingList[mid] as EipBinding, b) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private insertWaiting(b: EipBinding): void {
    const i = this.position(b);
    const at = this.waitingList[i];
    if (at && keyOf(at.metadata) === keyOf(b.metadata)) this.waitingList[i] = b;
    else this.waitingList.splice(i, 0, b);
  }

  private removeWaiting(b: EipBinding): void {
    const i = this.position(b);
    const at = this.waitingList[i];
    if (at && keyOf(at.metadata) === keyOf(b.metadata)) this.waitingList.splice(i, 1);
  }
}
