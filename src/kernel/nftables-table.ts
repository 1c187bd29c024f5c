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

export const SET_NAMES = ["internal_nets", "eips", "vmis", "eip_vmi", "vmi_eip"] as const;
export type SetName = (typeof SET_NAMES)[number];

interface SetLayout {
  readonly name: SetName;
  readonly map: boolean;
  readonly interval: boolean;
}

const SETS: readonly SetLayout[] = [
  { name: "internal_nets", map: false, interval: true },
  { name: "eips", map: false, interval: false },
  { name: "vmis", map: false, interval: false },
  { name: "eip_vmi", map: true, interval: false },
  { name: "vmi_eip", map: true, interval: false },
];

interface ChainLayout {
  readonly name: string;
  readonly type: "nat" | "filter";
  readonly hook: "prerouting" | "output" | "postrouting" | "forward";
  readonly prio: number;
  /** Rule text without the comment, by comment. */
  readonly rules: readonly { readonly comment: string; readonly text: string }[];
}

function chains(f: Family): ChainLayout[] {
  const mark = `meta mark set meta mark | 0x${FORWARD_MARK.toString(16).padStart(8, "0")} accept`;
  const dnat = { comment: "kube-eip dnat", text: `dnat to ${f.l3} daddr map @eip_vmi` };
  return [
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
  ];
}

/** Elements of each set, as keys: "10.0.0.1", "10.0.0.0/8", or "EIP : VMI" for a map. */
export type Elements = Readonly<Record<SetName, readonly string[]>>;

/** What a read found of our table. */
export interface TableRead {
  readonly exists: boolean;
  /** Whether the table's objects are exactly our layout (elements aside). */
  readonly layoutOk: boolean;
  /** The elements of each set read (empty when the set is missing). */
  readonly elements: Elements;
}

export function tableName(f: Family): string {
  return `${f.name} ${NFT_TABLE}`;
}

/**
 * The whole table with these elements, replacing whatever table of that name exists, in one
 * transaction (the `add` makes the `delete` valid when there is none).
 */
export function renderTable(f: Family, elements: Elements): string {
  const t = tableName(f);
  const lines = [`add table ${t}`, `delete table ${t}`, `table ${t} {`];
  for (const set of SETS) {
    const type = set.map ? `${f.addrType} : ${f.addrType}` : f.addrType;
    lines.push(`\t${set.map ? "map" : "set"} ${set.name} {`, `\t\ttype ${type}`);
    if (set.interval) lines.push("\t\tflags interval");
    const elems = elements[set.name];
    if (elems.length > 0) lines.push(`\t\telements = { ${elems.join(", ")} }`);
    lines.push("\t}");
  }
  for (const chain of chains(f)) {
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

/** Parses `nft -j list table <family> kube_eip` output (see TableRead). */
export function parseTable(f: Family, text: string): TableRead {
  const parsed = JSON.parse(text) as Json;
  const items = isObject(parsed) && Array.isArray(parsed.nftables) ? parsed.nftables : [];
  const elements: Record<SetName, string[]> = {
    internal_nets: [],
    eips: [],
    vmis: [],
    eip_vmi: [],
    vmi_eip: [],
  };
  const layout = chains(f);
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
      const spec = SETS.find((s) => s.name === body.name);
      const good =
        spec !== undefined &&
        spec.map === (kind === "map") &&
        body.type === f.addrType &&
        (!spec.map || body.map === f.addrType) &&
        sameFlags(body.flags, spec.interval ? ["interval"] : []) &&
        !seenSets.has(spec.name);
      if (!good || spec === undefined) {
        ok = false;
        continue;
      }
      seenSets.add(spec.name);
      const elems = Array.isArray(body.elem) ? body.elem : [];
      for (const elem of elems) {
        const key = elementKey(elem, spec);
        if (key === undefined) ok = false;
        else elements[spec.name].push(key);
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
  if (seenSets.size !== SETS.length || seenChains.size !== layout.length) ok = false;
  for (const chain of layout) {
    const comments = seenChains.get(chain.name) ?? [];
    const wanted = chain.rules.map((r) => r.comment);
    if (comments.length !== wanted.length || comments.some((c, i) => c !== wanted[i])) ok = false;
  }
  return { exists, layoutOk: exists && ok, elements };
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
