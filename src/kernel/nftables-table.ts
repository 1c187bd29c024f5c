// The layout of our nftables table (--dataplane nftables), how it is written as `nft -f`
// text and how `nft -j list table` output is read back. Pure: no I/O.
//
// One table per address family (`table ip kube_eip` today; an `ip6` family is one more
// Family value with its own table, since a table of one family holds the same objects):
//   set internal_nets   the internal nets (flags interval): never NATed, never EIP traffic
//   set eips, set vmis  the bound EIPs and VMIs
//   map eip_vmi         EIP -> VMI: `dnat to ip daddr map @eip_vmi` in prerouting and output
//   map vmi_eip         VMI -> EIP: `snat to ip saddr map @vmi_eip` in postrouting, for
//                       destinations outside internal_nets (in-cluster traffic keeps its
//                       address, as with the iptables dataplane)
//   chain forward       accepts, and marks with FORWARD_MARK, exactly the traffic the
//                       iptables dataplane's FORWARD rules accept (plan.ts JUMPS).
//   chain input         drops INVALID packets to a bound EIP (plan.ts JUMPS).
//   postrouting also masquerades hairpin callers: a caller inside the internal nets whose
//   connection was DNATed from a bound EIP (docs/traffic.md).
// With traffic counters (docs/traffic.md), two sets with a counter on each element:
//   set eip_rx          the bound EIPs; chain count_in (prerouting, before dstnat) looks
//                       every packet's destination up in it: what arrives for the EIP
//   set eip_tx          the bound EIPs; chain count_out (postrouting, after srcnat) looks
//                       every packet's source up in it: what leaves as from the EIP
// A lookup that matches adds the packet to the element's counter; the agent reads them with
// `nft -j list set`. A whole-table rewrite carries the counts it read over.
// One rule and one hash lookup per direction, whatever the number of bindings.
//
// Why the mark: in netfilter every base chain of a hook sees the packet in priority order,
// and an accept ends only the chain that says it; a drop anywhere is final. Our forward
// chain (priority filter - 10) runs before iptables' FORWARD (priority 0, nft backend or
// legacy), but cannot overrule a FORWARD policy DROP there. So the agent keeps one rule of
// its own at the top of iptables' FORWARD that accepts the marked packets
// (NFT_FORWARD_JUMP in plan.ts). NAT needs nothing of iptables: the first NAT binding made
// for a connection wins, whichever nat chain made it.
//
// Each rule carries a comment naming it: a read compares each chain's hook, priority,
// policy and the comments of its rules with this layout. Any difference in the table's
// objects (a chain, set or map missing, changed or added) is repaired by rewriting the whole
// table in one transaction; element differences are written as element deletes and adds.
import { FORWARD_MARK, NFT_TABLE } from "../model/desired.js";

export interface Family {
  /** The nft family of the table: "ip" (an "ip6" table would sit beside it). */
  readonly name: "ip";
  /** The element type of address sets. */
  readonly addrType: "ipv4_addr";
  /** The payload protocol keyword of addresses (`ip daddr`). */
  readonly l3: "ip";
}

export const IPV4: Family = { name: "ip", addrType: "ipv4_addr", l3: "ip" };

export const SET_NAMES = [
  "internal_nets",
  "eips",
  "vmis",
  "eip_vmi",
  "vmi_eip",
  "eip_rx",
  "eip_tx",
] as const;
export type SetName = (typeof SET_NAMES)[number];
/** The sets whose elements count packets. */
export type CountSet = "eip_rx" | "eip_tx";

interface SetLayout {
  readonly name: SetName;
  readonly map: boolean;
  readonly interval: boolean;
  /** A counter on each element: only with traffic counters. */
  readonly counter?: boolean;
}

const ALL_SETS: readonly SetLayout[] = [
  { name: "internal_nets", map: false, interval: true },
  { name: "eips", map: false, interval: false },
  { name: "vmis", map: false, interval: false },
  { name: "eip_vmi", map: true, interval: false },
  { name: "vmi_eip", map: true, interval: false },
  { name: "eip_rx", map: false, interval: false, counter: true },
  { name: "eip_tx", map: false, interval: false, counter: true },
];

/** The table's sets: the counting ones only with traffic counters. */
function sets(counters: boolean): readonly SetLayout[] {
  return counters ? ALL_SETS : ALL_SETS.filter((s) => s.counter !== true);
}

interface ChainLayout {
  readonly name: string;
  readonly type: "nat" | "filter";
  readonly hook: "prerouting" | "input" | "output" | "postrouting" | "forward";
  readonly prio: number;
  /** Rule text without the comment, by comment. */
  readonly rules: readonly { readonly comment: string; readonly text: string }[];
}

function chains(f: Family, counters: boolean): ChainLayout[] {
  const mark = `meta mark set meta mark | 0x${FORWARD_MARK.toString(16).padStart(8, "0")} accept`;
  const dnat = { comment: "kube-eip dnat", text: `dnat to ${f.l3} daddr map @eip_vmi` };
  const layout: ChainLayout[] = [
    // dstnat (-100), like iptables' nat PREROUTING and OUTPUT.
    { name: "prerouting", type: "nat", hook: "prerouting", prio: -100, rules: [dnat] },
    { name: "output", type: "nat", hook: "output", prio: -100, rules: [dnat] },
    {
      name: "postrouting",
      type: "nat",
      hook: "postrouting",
      prio: 100,
      rules: [
        {
          comment: "kube-eip snat",
          text: `${f.l3} daddr != @internal_nets snat to ${f.l3} saddr map @vmi_eip`,
        },
        {
          comment: "kube-eip hairpin",
          text: `${f.l3} saddr @internal_nets ${f.l3} daddr @vmis ct status dnat ct original ${f.l3} daddr @eips masquerade`,
        },
      ],
    },
    {
      name: "forward",
      type: "filter",
      hook: "forward",
      prio: -10,
      rules: [
        {
          comment: "kube-eip vmi to outside",
          text: `${f.l3} saddr @vmis ${f.l3} daddr != @internal_nets ${mark}`,
        },
        {
          comment: "kube-eip replies to vmi",
          text: `${f.l3} daddr @vmis ${f.l3} saddr != @internal_nets ct direction reply ${mark}`,
        },
        {
          comment: "kube-eip outside to eip",
          text: `${f.l3} daddr @vmis ${f.l3} saddr != @internal_nets ct status dnat ct original ${f.l3} daddr @eips ${mark}`,
        },
      ],
    },
    // INVALID packets to an EIP: dropped, not delivered to the node (plan.ts JUMPS).
    {
      name: "input",
      type: "filter",
      hook: "input",
      prio: -10,
      rules: [
        { comment: "kube-eip invalid to eip", text: `ct state invalid ${f.l3} daddr @eips drop` },
      ],
    },
  ];
  if (!counters) return layout;
  return [
    ...layout,
    // Before dstnat (-100): the destination is still the EIP.
    {
      name: "count_in",
      type: "filter",
      hook: "prerouting",
      prio: -150,
      rules: [{ comment: "kube-eip count in", text: `${f.l3} daddr @eip_rx` }],
    },
    // After srcnat (100): the source is already the EIP.
    {
      name: "count_out",
      type: "filter",
      hook: "postrouting",
      prio: 110,
      rules: [{ comment: "kube-eip count out", text: `${f.l3} saddr @eip_tx` }],
    },
  ];
}

/** Elements of each set, as keys: "10.0.0.1", "10.0.0.0/8", or "EIP : VMI" for a map. */
export type Elements = Readonly<Record<SetName, readonly string[]>>;

/** What an element's counter holds. */
export interface Counts {
  readonly packets: number;
  readonly bytes: number;
}

/** The counters of each counting set's elements, by address. */
export type CountsRead = Readonly<Record<CountSet, ReadonlyMap<string, Counts>>>;

/** What a read found of our table. */
export interface TableRead {
  readonly exists: boolean;
  /** Whether the table's objects are exactly our layout (elements aside). */
  readonly layoutOk: boolean;
  /** The elements of each set read (empty when the set is missing). */
  readonly elements: Elements;
  /** The counters of the counting sets' elements (empty without them). */
  readonly counts: CountsRead;
}

export function tableName(f: Family): string {
  return `${f.name} ${NFT_TABLE}`;
}

/**
 * The whole table with these elements, replacing whatever table of that name exists, in one
 * transaction (the `add` makes the `delete` valid when there is none). A counting set's
 * element starts from its count in `counts`, when there is one.
 */
export function renderTable(
  f: Family,
  elements: Elements,
  options: { counters: boolean; counts?: CountsRead },
): string {
  const t = tableName(f);
  const lines = [`add table ${t}`, `delete table ${t}`, `table ${t} {`];
  for (const set of sets(options.counters)) {
    const type = set.map ? `${f.addrType} : ${f.addrType}` : f.addrType;
    lines.push(`\t${set.map ? "map" : "set"} ${set.name} {`, `\t\ttype ${type}`);
    if (set.interval) lines.push("\t\tflags interval");
    if (set.counter === true) lines.push("\t\tcounter");
    let elems = elements[set.name];
    const counts = set.counter === true ? options.counts?.[set.name as CountSet] : undefined;
    if (counts !== undefined && counts.size > 0) {
      elems = elems.map((e) => {
        const c = counts.get(e);
        return c === undefined ? e : `${e} counter packets ${c.packets} bytes ${c.bytes}`;
      });
    }
    if (elems.length > 0) lines.push(`\t\telements = { ${elems.join(", ")} }`);
    lines.push("\t}");
  }
  for (const chain of chains(f, options.counters)) {
    lines.push(
      `\tchain ${chain.name} {`,
      `\t\ttype ${chain.type} hook ${chain.hook} priority ${chain.prio}; policy accept;`,
    );
    for (const rule of chain.rules) lines.push(`\t\t${rule.text} comment "${rule.comment}"`);
    lines.push("\t}");
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}

/** `delete element` / `add element` lines for one set (keys only for a delete). */
export function renderElements(
  f: Family,
  set: SetName,
  op: "add" | "delete",
  keys: readonly string[],
): string {
  if (keys.length === 0) return "";
  const items = op === "delete" && isMap(set) ? keys.map(mapKey) : keys;
  return `${op} element ${tableName(f)} ${set} { ${items.join(", ")} }\n`;
}

export function isMap(set: SetName): boolean {
  return set === "eip_vmi" || set === "vmi_eip";
}

/** The key of a map element "K : V". */
export function mapKey(element: string): string {
  const i = element.indexOf(" : ");
  return i === -1 ? element : element.slice(0, i);
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** No elements in any set. */
export function noElements(): Record<SetName, string[]> {
  return {
    internal_nets: [],
    eips: [],
    vmis: [],
    eip_vmi: [],
    vmi_eip: [],
    eip_rx: [],
    eip_tx: [],
  };
}

export const NO_COUNTS: CountsRead = { eip_rx: new Map(), eip_tx: new Map() };

/**
 * Parses `nft -j list table <family> kube_eip` output (see TableRead); `counters`: whether
 * the layout has the counting sets and chains.
 */
export function parseTable(f: Family, text: string, options?: { counters: boolean }): TableRead {
  const counters = options?.counters ?? false;
  const parsed = JSON.parse(text) as Json;
  const items = isObject(parsed) && Array.isArray(parsed.nftables) ? parsed.nftables : [];
  const elements = noElements();
  const counts = { eip_rx: new Map<string, Counts>(), eip_tx: new Map<string, Counts>() };
  const layout = chains(f, counters);
  const wantedSets = sets(counters);
  let ok = true;
  const seenSets = new Set<string>();
  const seenChains = new Map<string, string[]>();
  for (const item of items) {
    if (!isObject(item)) continue;
    const [kind] = Object.keys(item);
    const body = kind === undefined ? undefined : item[kind];
    if (kind === undefined || !isObject(body)) continue;
    if (kind === "metainfo" || kind === "table") continue;
    if (kind === "set" || kind === "map") {
      const spec = wantedSets.find((s) => s.name === body.name);
      const good =
        spec !== undefined &&
        spec.map === (kind === "map") &&
        body.type === f.addrType &&
        (!spec.map || body.map === f.addrType) &&
        sameFlags(body.flags, spec.interval ? ["interval"] : []) &&
        hasCounter(body.stmt) === (spec.counter === true) &&
        !seenSets.has(spec.name);
      if (!good || spec === undefined) {
        ok = false;
        continue;
      }
      seenSets.add(spec.name);
      const elems = Array.isArray(body.elem) ? body.elem : [];
      for (const elem of elems) {
        const counted = spec.counter === true ? countedElement(elem) : undefined;
        const key = elementKey(counted?.val ?? elem, spec);
        if (key === undefined) ok = false;
        else elements[spec.name].push(key);
        if (key !== undefined && counted !== undefined) {
          counts[spec.name as CountSet].set(key, counted.counts);
        }
      }
    } else if (kind === "chain") {
      const spec = layout.find((c) => c.name === body.name);
      const good =
        spec !== undefined &&
        body.type === spec.type &&
        body.hook === spec.hook &&
        body.prio === spec.prio &&
        body.policy === "accept" &&
        !seenChains.has(spec.name);
      if (!good || spec === undefined) ok = false;
      else seenChains.set(spec.name, []);
    } else if (kind === "rule") {
      const comments = typeof body.chain === "string" ? seenChains.get(body.chain) : undefined;
      if (comments === undefined) ok = false;
      else comments.push(typeof body.comment === "string" ? body.comment : "");
    } else {
      // Anything else in our table (a flowtable, a counter...) is not ours.
      ok = false;
    }
  }
  const exists = items.some((item) => isObject(item) && isObject(item.table));
  if (seenSets.size !== wantedSets.length || seenChains.size !== layout.length) ok = false;
  for (const chain of layout) {
    const comments = seenChains.get(chain.name) ?? [];
    const wanted = chain.rules.map((r) => r.comment);
    if (comments.length !== wanted.length || comments.some((c, i) => c !== wanted[i])) ok = false;
  }
  return { exists, layoutOk: exists && ok, elements, counts };
}

/** Whether a set's `stmt` list holds a counter (`"stmt": [{"counter": null}]`). */
function hasCounter(stmt: Json | undefined): boolean {
  return Array.isArray(stmt) && stmt.some((s) => isObject(s) && "counter" in s);
}

/**
 * An element of a counting set: `{"elem": {"val": "1.2.3.4", "counter": {"packets": 1,
 * "bytes": 84}}}`; undefined for any other form (a plain element counts nothing).
 */
function countedElement(elem: Json): { val: Json; counts: Counts } | undefined {
  if (!isObject(elem) || !isObject(elem.elem)) return undefined;
  const { val, counter } = elem.elem;
  if (val === undefined) return undefined;
  if (!isObject(counter)) return { val, counts: { packets: 0, bytes: 0 } };
  const { packets, bytes } = counter;
  if (!isCount(packets) || !isCount(bytes)) return undefined;
  return { val, counts: { packets, bytes } };
}

function isCount(value: Json | undefined): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Parses `nft -j list set <family> kube_eip <set>` output: each element's counts. */
export function parseCountSet(text: string): Map<string, Counts> {
  const parsed = JSON.parse(text) as Json;
  const items = isObject(parsed) && Array.isArray(parsed.nftables) ? parsed.nftables : [];
  const result = new Map<string, Counts>();
  for (const item of items) {
    if (!isObject(item) || !isObject(item.set)) continue;
    const elems = Array.isArray(item.set.elem) ? item.set.elem : [];
    for (const elem of elems) {
      const counted = countedElement(elem);
      if (counted !== undefined && typeof counted.val === "string") {
        result.set(counted.val, counted.counts);
      }
    }
  }
  return result;
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function sameFlags(flags: Json | undefined, wanted: readonly string[]): boolean {
  const list = Array.isArray(flags) ? flags : flags === undefined ? [] : [flags];
  return list.length === wanted.length && list.every((flag, i) => flag === wanted[i]);
}

/** The key of one element as nft -j prints it; undefined for a form we never write. */
function elementKey(elem: Json, spec: SetLayout): string | undefined {
  if (spec.map) {
    if (!Array.isArray(elem) || elem.length !== 2) return undefined;
    const [key, value] = elem;
    return typeof key === "string" && typeof value === "string" ? `${key} : ${value}` : undefined;
  }
  if (typeof elem === "string") return spec.interval ? `${elem}/32` : elem;
  if (spec.interval && isObject(elem) && isObject(elem.prefix)) {
    const { addr, len } = elem.prefix;
    if (typeof addr === "string" && typeof len === "number") return `${addr}/${len}`;
  }
  return undefined;
}
