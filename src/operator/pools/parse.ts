// EipPools parsed into sorted, disjoint blocks of addresses that may be handed out, and
// checked against each other: pure, no I/O.
//
// - A CIDR gives its addresses but its network and broadcast addresses (a /31 or /32 gives
//   all of its one or two); a range "a-b" gives a to b, both included.
// - `exclude` takes addresses out. Node addresses and gateways are taken out at allocation.
// - A pool is invalid (it admits no one and hands out nothing; its status says why) when a
//   range runs backwards, when its own entries overlap, or when it overlaps an older pool
//   (creation time, then name): the older one keeps the addresses.
import { parseIpv4, parseIpv4Net } from "../../common/ipv4.js";
import type { EipPool, LabelSelector } from "./types.js";

export interface Block {
  readonly start: number;
  readonly end: number;
}

export interface ParsedPool {
  readonly name: string;
  readonly created: string;
  /** Sorted, disjoint, non-empty. */
  readonly blocks: readonly Block[];
  readonly size: number;
  readonly limit: number | undefined;
  readonly isDefault: boolean;
  readonly namespaces: ReadonlySet<string>;
  readonly selector: LabelSelector | undefined;
}

export type ParseResult =
  | { readonly ok: true; readonly pool: ParsedPool }
  | { readonly ok: false; readonly name: string; readonly error: string };

/** One entry of addresses or exclude; `hosts` drops a CIDR's network and broadcast. */
export function parseEntry(text: string, hosts: boolean): Block | string {
  const dash = text.indexOf("-");
  if (dash !== -1) {
    const start = parseIpv4(text.slice(0, dash));
    const end = parseIpv4(text.slice(dash + 1));
    if (start === undefined || end === undefined) return `${text} is not a range a.b.c.d-e.f.g.h`;
    if (start > end) return `the range ${text} runs backwards`;
    return { start, end };
  }
  const net = parseIpv4Net(text);
  if (!net) return `${text} is not an IPv4 address or CIDR without host bits`;
  const end = net.base + 2 ** (32 - net.prefix) - 1;
  return hosts && net.prefix <= 30
    ? { start: net.base + 1, end: end - 1 }
    : { start: net.base, end };
}

function sorted(blocks: Block[]): Block[] {
  return [...blocks].sort((a, b) => a.start - b.start);
}

/** The blocks minus the excluded ones (both sorted, `blocks` disjoint). */
function subtract(blocks: Block[], excluded: Block[]): Block[] {
  let out = blocks;
  for (const x of excluded) {
    out = out.flatMap((b) => {
      if (x.end < b.start || x.start > b.end) return [b];
      const parts: Block[] = [];
      if (x.start > b.start) parts.push({ start: b.start, end: x.start - 1 });
      if (x.end < b.end) parts.push({ start: x.end + 1, end: b.end });
      return parts;
    });
  }
  return out;
}

export function parsePool(pool: EipPool): ParseResult {
  const name = pool.metadata.name;
  const fail = (error: string): ParseResult => ({ ok: false, name, error });
  const blocks: Block[] = [];
  for (const text of pool.spec.addresses ?? []) {
    const b = parseEntry(text, true);
    if (typeof b === "string") return fail(b);
    blocks.push(b);
  }
  const excluded: Block[] = [];
  for (const text of pool.spec.exclude ?? []) {
    const b = parseEntry(text, false);
    if (typeof b === "string") return fail(`exclude: ${b}`);
    excluded.push(b);
  }
  const ordered = sorted(blocks);
  for (let i = 1; i < ordered.length; i++) {
    const prev = ordered[i - 1] as Block;
    if ((ordered[i] as Block).start <= prev.end) return fail("its addresses overlap each other");
  }
  const usable = subtract(ordered, sorted(excluded));
  if (usable.length === 0) return fail("it has no address to hand out");
  return {
    ok: true,
    pool: {
      name,
      created: pool.metadata.creationTimestamp ?? "",
      blocks: usable,
      size: usable.reduce((n, b) => n + b.end - b.start + 1, 0),
      limit: pool.spec.perNamespaceLimit,
      isDefault: pool.spec.default === true,
      namespaces: new Set(pool.spec.namespaces ?? []),
      selector: pool.spec.namespaceSelector,
    },
  };
}

function olderPool(a: { created: string; name: string }, b: { created: string; name: string }) {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function overlap(a: readonly Block[], b: readonly Block[]): boolean {
  return a.some((x) => b.some((y) => x.start <= y.end && y.start <= x.end));
}

export interface PoolSet {
  /** Valid pools, oldest first. */
  readonly valid: readonly ParsedPool[];
  /** Why each invalid pool is, by name. */
  readonly invalid: ReadonlyMap<string, string>;
  /** True when any EipPool object exists, valid or not: then addresses are fenced. */
  readonly fenced: boolean;
  /** The default pool: the oldest valid pool marked default. */
  readonly defaultPool: ParsedPool | undefined;
}

export function poolSet(pools: readonly EipPool[]): PoolSet {
  const invalid = new Map<string, string>();
  const parsed: ParsedPool[] = [];
  for (const p of pools) {
    const r = parsePool(p);
    if (r.ok) parsed.push(r.pool);
    else invalid.set(r.name, r.error);
  }
  parsed.sort(olderPool);
  const valid: ParsedPool[] = [];
  for (const p of parsed) {
    const older = valid.find((v) => overlap(v.blocks, p.blocks));
    if (older) invalid.set(p.name, `it overlaps the older EipPool ${older.name}`);
    else valid.push(p);
  }
  return { valid, invalid, fenced: pools.length > 0, defaultPool: valid.find((p) => p.isDefault) };
}

export function contains(pool: ParsedPool, address: number): boolean {
  return pool.blocks.some((b) => b.start <= address && address <= b.end);
}

/** Whether the pool admits a namespace (its labels undefined when unknown). */
export function admits(
  pool: ParsedPool,
  namespace: string,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  if (pool.namespaces.size === 0 && !pool.selector) return true;
  if (pool.namespaces.has(namespace)) return true;
  return pool.selector !== undefined && labels !== undefined && matches(pool.selector, labels);
}

export function matches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    const inValues = has && (e.values ?? []).includes(value as string);
    const ok =
      e.operator === "In"
        ? inValues
        : e.operator === "NotIn"
          ? !inValues
          : e.operator === "Exists"
            ? has
            : !has;
    if (!ok) return false;
  }
  return true;
}
