// RouteManager: the policy routing of bound VMIs (routes of table eip_route, `from VMI`
// rules), the EIPs held as addresses on the gateway device, and, with --arp-poisoning, the
// kernel's ARP answers for EIPs the node does not hold (proxy neighbour entries).
//
// What it owns:
// - every route of table 1001: the table holds exactly the desired routes (link route to the
//   EIP network, default via the gateway, throw routes for the internal nets);
// - every ip rule at priority 1001 whose table is 1001 (shown as "eip_route" when that name
//   is registered): exactly one `from VMI/32 lookup 1001` per bound VMI, nothing else;
// - on the gateway device, the addresses inside the EIP network that are /32, and an address
//   with another prefix only while it equals a desired EIP: the previous version put EIPs
//   there with the EIP network's prefix (e.g. /24), and those are replaced by a /32 without a
//   gap (the /32 is added before the old one is deleted). Any other address is never touched:
//   the node may have its own address in that network with a /24;
// - on the gateway device, the proxy neighbour entries for addresses inside the EIP network
//   (`ip neigh add proxy EIP dev <gatewayDev>`: the kernel answers ARP for EIP there with the
//   device's MAC, as long as forwarding is on and the route to EIP leaves through another
//   device); proxy entries for other addresses are never touched;
// - every route of the main table with protocol `protocol` (225): the host routes
//   `EIP/32 dev <cni bridge>` that give each proxied EIP such a route.
// (The gateway device's arp_ignore and proxy_delay are SysctlManager's.)
//
// How it reads: `ip -json route show table 1001`, `ip -json -N rule show` (-N: table ids as
// numbers whatever rt_tables says; "eip_route" is accepted too), `ip -json -4 addr show
// dev <gatewayDev>`, `ip -4 -json neigh show proxy dev <gatewayDev>` and `ip -json route
// show table main proto 225`, in parallel. Routes compare by kind/dst/gateway/dev exactly
// (a route with a metric or tos, or of any other type, is never the one we want); the
// kernel's identity of a route in a table is (dst, tos, metric), which decides between
// `replace` and `del`. Host routes are printed without "/32"; we add it back.
//
// How it writes: one `ip -force -batch -` call whose stdin holds, in this order: route
// replaces (link routes first, so the gateway of the default route is reachable, then via
// routes, then throw routes), route deletions, rule additions, rule deletions (rules with
// extra selectors first: `ip rule del` treats every selector it is not given as a wildcard),
// address additions (`address replace EIP/32`, idempotent), address deletions, then the ARP
// answers: host routes (`route add`: a route of someone else's at that address
// is an error, never overwritten), proxy entries, then proxy entry deletions before host
// route deletions (so an answer never outlives its route). `-force` makes ip run every line
// even after one fails; it reports `Command failed -:N` for each failed line N, which maps
// back to the phase of that line (routes and rules: PolicyRouting; addresses and ARP
// answers: Address); the lowest failing phase wins. A line ip cannot parse is different: ip
// exits at once, skipping the rest of the batch, without a `Command failed` line; so every
// desired address, route and device name is validated before anything is written.
//
// One exception to "one call": deleting an adopted non-/32 EIP that is the primary address of
// its subnet would, with promote_secondaries off, make the kernel delete every secondary of
// that subnet too (possibly the node's own address). In that case only, the manager first
// sets net.ipv4.conf.<dev>.promote_secondaries=1 with `sysctl -w`.
//
// Belief: after a successful write the manager believes the kernel holds what it wrote and
// does not read again unless asked (reread). It forgets the belief after any failure, and
// after a write whose deletions could not be named exactly (see rule deletions above) or that
// deleted a non-/32 address (secondaries may have been promoted), so the next apply re-reads.
// The belief keeps our plain `from VMI/32` rules and the device's /32 addresses in maps,
// updated in place with what was written: a plan costs one lookup per desired rule source
// and address it already holds, validates only the others, and walks the belief only when
// something must go or, once per write, to renumber the rules' order; so its cost follows
// the change, not the number of bindings. (Rules that are not plain /32 ones, or copies, are
// kept in kernel order until the next write deletes them.) The ARP answers are kept the same
// way, in maps by EIP. After a write the manager tells its owner which EIPs arrived on the
// node (an address or proxy entry added) and which left, for gratuitous ARP. read() and
// adopt() let the caller do the slow `ip -json ... show` apart from apply().
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { randomBytes } from "node:crypto";
import {
  type ArpProxySpec,
  type DesiredState,
  ROUTE_TABLE_ID,
  ROUTE_TABLE_NAME,
  type RouteSpec,
} from "../agent/plan.js";
import {
  canonicalIpv4,
  formatIpv4Net,
  type Ipv4Net,
  netContains,
  parseIpv4,
  parseIpv4Net,
} from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import { CommandError, type CommandRunner } from "./runner.js";
import { PreparedBeliefs, sameStrings } from "./snapshot.js";

export interface RouteDesired {
  readonly routes: readonly RouteSpec[];
  readonly ruleSources: readonly string[];
  readonly gatewayAddresses: readonly string[];
  readonly arpProxy: ArpProxySpec | undefined;
}

/** The part of the node's desired state this manager owns. */
export function routeDesired(state: DesiredState): RouteDesired {
  return {
    routes: state.routes,
    ruleSources: state.ruleSources,
    gatewayAddresses: state.gatewayAddresses,
    arpProxy: state.arpProxy,
  };
}

export interface RouteManagerOptions {
  /** Route table id (1001). */
  readonly table: number;
  /** Priority of our ip rules (1001). */
  readonly priority: number;
  readonly gatewayDev: string;
  /** Canonical CIDR of the EIP network. */
  readonly eipCidr: string;
  /** Route protocol of our host routes in the main table (ARP_ROUTE_PROTOCOL). */
  readonly protocol: number;
  /** Name the table may be shown with (rt_tables); defaults to "eip_route". */
  readonly tableName?: string;
  /**
   * Told the EIPs a successful write made this node answer ARP for (an address added to the
   * gateway device, or a proxy entry added): they have just arrived here.
   */
  readonly onEipsArrived?: (eips: readonly string[]) => void;
  /** Told the EIPs a successful write stopped answering ARP for (told before any arrivals). */
  readonly onEipsLeft?: (eips: readonly string[]) => void;
}

/** A route of our table as the kernel holds it. */
export interface KernelRoute {
  /** What the kernel tells routes of one table apart by: "dst tos T metric M". */
  readonly identity: string;
  /** Comparable with routeKey(desired): "via default 192.168.18.1 eth1", "throw 10.0.0.0/8". */
  readonly key: string;
  /** The batch line that deletes it. */
  readonly del: string;
}

/** One of our ip rules as the kernel holds it. */
export interface KernelRule {
  /** "from 10.0.0.1/32" for a rule with no other selector; anything else is unique. */
  readonly key: string;
  /** True when `del` names every selector the rule has (so it deletes exactly this rule). */
  readonly exact: boolean;
  readonly del: string;
}

export interface KernelAddress {
  readonly address: string;
  readonly prefix: number;
  readonly secondary: boolean;
}

type JsonObject = Record<string, unknown>;

function parseJsonArray(text: string, what: string): JsonObject[] {
  const trimmed = text.trim();
  if (trimmed === "") return [];
  const value: unknown = JSON.parse(trimmed);
  if (!Array.isArray(value)) throw new Error(`${what}: expected a JSON array`);
  return value.filter((v): v is JsonObject => typeof v === "object" && v !== null);
}

function str(obj: JsonObject, key: string): string | undefined {
  const v = obj[key];
  return typeof v === "string" ? v : typeof v === "number" ? String(v) : undefined;
}

/** "default" or a canonical CIDR; other text comes back unchanged. */
export function canonicalDst(dst: string): string {
  if (dst === "default" || dst === "0.0.0.0/0") return "default";
  const net = parseIpv4Net(dst);
  return net === undefined ? dst : formatIpv4Net(net);
}

/** The comparison key of a desired route (see KernelRoute.key). */
export function routeKey(route: RouteSpec): string {
  const dst = canonicalDst(route.dst);
  switch (route.kind) {
    case "via":
      return `via ${dst} ${canonicalIpv4(route.gateway) ?? route.gateway} ${route.dev}`;
    case "link":
      return `link ${dst} ${route.dev}`;
    case "throw":
      return `throw ${dst}`;
  }
}

function routeReplaceLine(route: RouteSpec, table: number): string {
  const dst = canonicalDst(route.dst);
  switch (route.kind) {
    case "via":
      return `route replace ${dst} via ${route.gateway} dev ${route.dev} table ${table}`;
    case "link":
      return `route replace ${dst} dev ${route.dev} scope link table ${table}`;
    case "throw":
      return `route replace throw ${dst} table ${table}`;
  }
}

function identityOf(dst: string, tos: string, metric: number): string {
  return `${dst} tos ${tos} metric ${metric}`;
}

function routeDelLine(dst: string, tos: string, metric: number, table: number | "main"): string {
  let line = `route del ${dst} table ${table}`;
  if (tos !== "0") line += ` tos ${tos}`;
  if (metric !== 0) line += ` metric ${metric}`;
  return line;
}

/** Parses `ip -json route show table N`. */
export function parseRoutes(json: string, table: number): KernelRoute[] {
  const routes: KernelRoute[] = [];
  for (const r of parseJsonArray(json, "ip route")) {
    const rawDst = str(r, "dst");
    if (rawDst === undefined) continue;
    const dst = canonicalDst(rawDst);
    const type = str(r, "type") ?? "unicast";
    const tosText = str(r, "tos") ?? str(r, "dsfield") ?? "0";
    const tos = tosText === "0x00" || tosText === "0x0" ? "0" : tosText;
    const metric = Number(str(r, "metric") ?? "0") || 0;
    const gateway = str(r, "gateway");
    const dev = str(r, "dev");
    let key: string;
    if (type === "throw") {
      key = `throw ${dst}`;
    } else if (type === "unicast" && r.nexthops === undefined && gateway !== undefined && dev) {
      key = `via ${dst} ${gateway} ${dev}`;
    } else if (
      type === "unicast" &&
      r.nexthops === undefined &&
      dev &&
      str(r, "scope") === "link"
    ) {
      key = `link ${dst} ${dev}`;
    } else {
      key = `other ${JSON.stringify(r)}`;
    }
    if (tos !== "0" || metric !== 0) key += ` tos ${tos} metric ${metric}`;
    routes.push({
      identity: identityOf(dst, tos, metric),
      key,
      del: routeDelLine(dst, tos, metric, table),
    });
  }
  return routes;
}

/** Rule attributes that do not select packets: a rule with only these is "from X lookup T". */
const PLAIN_RULE_KEYS = new Set(["priority", "src", "srclen", "table", "protocol"]);

function ruleFrom(src: string | undefined, len: string | undefined): string {
  if (src === undefined || src === "all") return "all";
  const net = parseIpv4Net(`${src}/${len ?? "32"}`, { allowHostBits: true });
  return net === undefined ? `${src}/${len ?? "32"}` : formatIpv4Net(net);
}

/**
 * Parses `ip -json [-N] rule show`, keeping only our rules: priority `priority`, table
 * `table` (or `tableName`).
 */
export function parseRules(
  json: string,
  options: { table: number; priority: number; tableName?: string },
): KernelRule[] {
  const tableName = options.tableName ?? ROUTE_TABLE_NAME;
  const rules: KernelRule[] = [];
  for (const r of parseJsonArray(json, "ip rule")) {
    if (str(r, "priority") !== String(options.priority)) continue;
    const table = str(r, "table");
    if (table !== String(options.table) && table !== tableName) continue;
    const from = ruleFrom(str(r, "src"), str(r, "srclen"));
    const plain = Object.keys(r).every((k) => PLAIN_RULE_KEYS.has(k));
    const tail = `lookup ${options.table} priority ${options.priority}`;
    if (plain) {
      // `from all` is a wildcard for `ip rule del`: it could hit any of our rules.
      rules.push({
        key: `from ${from}`,
        exact: from !== "all",
        del: `rule del from ${from} ${tail}`,
      });
      continue;
    }
    const parts = ["rule del"];
    let exact = true;
    for (const k of Object.keys(r)) {
      if (!PLAIN_RULE_KEYS.has(k) && !RULE_SELECTORS.has(k)) exact = false;
    }
    if ("not" in r) parts.push("not");
    parts.push(`from ${from}`);
    const dst = str(r, "dst");
    if (dst !== undefined && dst !== "all") parts.push(`to ${dst}/${str(r, "dstlen") ?? "32"}`);
    const iif = str(r, "iif");
    if (iif !== undefined) parts.push(`iif ${iif}`);
    const oif = str(r, "oif");
    if (oif !== undefined) parts.push(`oif ${oif}`);
    const fwmark = str(r, "fwmark");
    const fwmask = str(r, "fwmask");
    if (fwmark !== undefined) parts.push(`fwmark ${fwmark}${fwmask ? `/${fwmask}` : ""}`);
    const tos = str(r, "tos");
    if (tos !== undefined) parts.push(`tos ${tos}`);
    parts.push(tail);
    // Unique key: a rule with extra selectors is never one we want.
    rules.push({
      key: `other ${JSON.stringify(r)}`,
      exact: exact && from !== "all",
      del: parts.join(" "),
    });
  }
  return rules;
}

/** Selectors parseRules can name in a `rule del` line. */
const RULE_SELECTORS = new Set(["not", "dst", "dstlen", "iif", "oif", "fwmark", "fwmask", "tos"]);

/** Parses `ip -json -4 addr show dev DEV`: the IPv4 addresses of the device. */
export function parseAddresses(json: string): KernelAddress[] {
  const result: KernelAddress[] = [];
  for (const link of parseJsonArray(json, "ip addr")) {
    const infos = link.addr_info;
    if (!Array.isArray(infos)) continue;
    for (const info of infos as JsonObject[]) {
      if (info.family !== "inet") continue;
      const local = str(info, "local");
      const prefix = Number(str(info, "prefixlen"));
      if (local === undefined || !Number.isInteger(prefix)) continue;
      result.push({
        address: canonicalIpv4(local) ?? local,
        prefix,
        secondary: info.secondary === true,
      });
    }
  }
  return result;
}

/** Parses `ip -4 -json neigh show proxy dev DEV`: the addresses proxied on the device. */
export function parseProxies(json: string): string[] {
  const result: string[] = [];
  for (const entry of parseJsonArray(json, "ip neigh")) {
    const dst = str(entry, "dst");
    const address = dst === undefined ? undefined : canonicalIpv4(dst);
    if (address !== undefined) result.push(address);
  }
  return result;
}

/** A route of the main table with our protocol. */
export interface ArpRoute {
  /** The address of a host route (/32, tos 0, metric 0: the identity of ours); else undefined. */
  readonly address: string | undefined;
  /** The device of a host route that is a plain `dev D scope link` route; else undefined. */
  readonly dev: string | undefined;
  /** The batch line that deletes it. */
  readonly del: string;
}

/** Parses `ip -json route show table main proto P` (ip leaves the protocol out). */
export function parseArpRoutes(json: string, protocol: number): ArpRoute[] {
  const routes: ArpRoute[] = [];
  for (const r of parseJsonArray(json, "ip route")) {
    const rawDst = str(r, "dst");
    if (rawDst === undefined) continue;
    const dst = canonicalDst(rawDst);
    const tosText = str(r, "tos") ?? str(r, "dsfield") ?? "0";
    const tos = tosText === "0x00" || tosText === "0x0" ? "0" : tosText;
    const metric = Number(str(r, "metric") ?? "0") || 0;
    const host = dst.endsWith("/32") && tos === "0" && metric === 0;
    const dev = str(r, "dev");
    const plain =
      (str(r, "type") ?? "unicast") === "unicast" &&
      r.nexthops === undefined &&
      str(r, "gateway") === undefined &&
      str(r, "scope") === "link";
    routes.push({
      address: host ? dst.slice(0, -3) : undefined,
      dev: host && plain ? dev : undefined,
      del: `${routeDelLine(dst, tos, metric, "main")} proto ${protocol}`,
    });
  }
  return routes;
}

/** An address of the gateway device, with whether it lies in the EIP network. */
export interface HeldAddress extends KernelAddress {
  readonly inEipNet: boolean;
}

/**
 * What read() returns: table 1001, our rules, the gateway device's addresses, our proxy
 * entries (those in the EIP network) and our main-table routes.
 */
export interface RouteSnapshot {
  readonly routes: readonly KernelRoute[];
  readonly rules: readonly KernelRule[];
  readonly addresses: readonly HeldAddress[];
  readonly proxies: readonly string[];
  readonly arpRoutes: readonly ArpRoute[];
}

/** A held address in the belief. */
interface AddressEntry extends HeldAddress {
  /** Its position on the device: deletions are written in this order. */
  readonly seq: number;
  /** The last plan pass that wanted this address. */
  seen: number;
}

/** A rule as read, kept while the read rules are not all plain `from VMI/32` ones. */
interface ReadRule {
  readonly rule: KernelRule;
  /** The VMI of a plain `from VMI/32` rule, when it is the first rule of that VMI. */
  readonly source: string | undefined;
}

/** One of our plain `from VMI/32 lookup T priority P` rules, under its VMI. */
interface SourceEntry {
  /** The last plan pass that wanted it, and the index of its first desired source then. */
  seen: number;
  pos: number;
  /**
   * Its place among our rules: the kernel's order after a read, the desired order after a
   * write. Deletions are written in this order.
   */
  order: number;
}

/** A proxy entry, or a host route with its device (undefined: not a plain `dev D` route). */
interface ArpEntry {
  readonly dev: string | undefined;
  /** The last plan pass that wanted it. */
  seen: number;
}

interface Belief {
  /** The routes of our table (a handful). */
  routes: readonly KernelRoute[];
  readonly sources: Map<string, SourceEntry>;
  /**
   * Every rule as read, in kernel order, when some are not plain /32 rules or are copies:
   * the next write deletes those, in this order. Undefined once the rules are just `sources`.
   */
  irregularRules: readonly ReadRule[] | undefined;
  /** The /32 addresses of the gateway device, by canonical address (see fileAddress). */
  readonly addresses32: Map<string, AddressEntry>;
  /** How many of addresses32 lie in the EIP network. */
  inEipNet32: number;
  /** The other addresses of the device (mostly other prefixes), in device order. */
  others: AddressEntry[];
  /** Those of `others` that lie in the EIP network, by address. */
  othersInEipNet: Map<string, AddressEntry[]>;
  nextSeq: number;
  /** Our proxy entries on the gateway device, by EIP. */
  readonly proxies: Map<string, ArpEntry>;
  /** Our host routes in the main table, by EIP. */
  readonly arpRoutes: Map<string, ArpEntry>;
  /** Our other main-table routes (not at a host route's identity): the next write deletes them. */
  otherArpRoutes: readonly ArpRoute[];
}

interface BatchLine {
  readonly text: string;
  readonly phase: Phase;
}

interface WritePlan {
  readonly lines: BatchLine[];
  /** Whether the gateway device needs promote_secondaries before the batch runs. */
  readonly promoteSecondaries: boolean;
  /** True when the belief cannot be trusted after the write, even if it succeeds. */
  readonly rereadAfter: boolean;
  /** Updates the belief to what the kernel holds once the lines succeeded. */
  commit(): void;
  /** EIPs the lines add as an address or a proxy entry. */
  readonly arrived: readonly string[];
  /** EIPs whose address (not wanted any more) or proxy entry the lines delete. */
  readonly left: readonly string[];
}

export class RouteManager implements KernelManager<RouteDesired, RouteSnapshot> {
  private desired: RouteDesired = {
    routes: [],
    ruleSources: [],
    gatewayAddresses: [],
    arpProxy: undefined,
  };
  private belief: Belief | undefined;
  private readonly eipNet: Ipv4Net;
  private readonly tableName: string;
  /** Numbers the plan passes, so that marking a rule or address as wanted allocates nothing. */
  private pass = 0;

  constructor(
    private readonly runner: CommandRunner,
    private readonly options: RouteManagerOptions,
  ) {
    const net = parseIpv4Net(options.eipCidr);
    if (net === undefined) throw new Error(`invalid EIP network ${options.eipCidr}`);
    if (!isDeviceName(options.gatewayDev)) {
      throw new Error(`invalid gateway device ${JSON.stringify(options.gatewayDev)}`);
    }
    this.eipNet = net;
    this.tableName = options.tableName ?? ROUTE_TABLE_NAME;
  }

  setDesired(desired: RouteDesired): void {
    this.desired = desired;
  }

  async apply(options: { reread: boolean }): Promise<number> {
    const desired = this.desired;
    try {
      let belief = this.belief;
      if (options.reread || belief === undefined) {
        belief = this.beliefOf(await this.readKernel(), desired);
        this.belief = belief;
      }
      const plan = this.plan(desired, belief);
      if (plan.lines.length === 0) return 0;
      // Forget the belief before writing: a failed or partial write leaves it unknown.
      this.belief = undefined;
      if (plan.promoteSecondaries) await this.promoteSecondaries();
      await this.runBatch(plan.lines);
      if (plan.left.length > 0) this.options.onEipsLeft?.(plan.left);
      if (plan.arrived.length > 0) this.options.onEipsArrived?.(plan.arrived);
      if (!plan.rereadAfter) {
        plan.commit();
        this.belief = belief;
      }
      return plan.lines.length;
    } catch (err) {
      this.belief = undefined;
      throw asKernelError(err);
    }
  }

  async read(): Promise<RouteSnapshot> {
    const desired = this.desired;
    try {
      const snapshot = await this.readKernel();
      return prepared.put(snapshot, this.beliefOf(snapshot, desired));
    } catch (err) {
      throw asKernelError(err);
    }
  }

  adopt(snapshot: RouteSnapshot): void {
    this.belief = prepared.take(snapshot) ?? this.beliefOf(snapshot, this.desired);
  }

  private async readKernel(): Promise<RouteSnapshot> {
    const { table, priority, gatewayDev, protocol } = this.options;
    const ip = (args: string[]) => this.runner.run("ip", args);
    const [routes, rules, addresses, proxies, arpRoutes] = await Promise.allSettled([
      ip(["-json", "route", "show", "table", String(table)]).catch(noTableYet),
      ip(["-json", "-N", "rule", "show"]),
      ip(["-json", "-4", "addr", "show", "dev", gatewayDev]),
      ip(["-4", "-json", "neigh", "show", "proxy", "dev", gatewayDev]),
      ip(["-json", "route", "show", "table", "main", "proto", String(protocol)]),
    ]);
    const output = (result: PromiseSettledResult<{ stdout: string }>, phase: Phase): string => {
      if (result.status === "fulfilled") return result.value.stdout;
      throw new KernelError(phase, `ip: ${errorMessage(result.reason)}`, {
        cause: result.reason,
      });
    };
    const routesOut = output(routes, Phase.PolicyRouting);
    const rulesOut = output(rules, Phase.PolicyRouting);
    const addressesOut = output(addresses, Phase.Address);
    return {
      routes: parseRoutes(routesOut, table),
      rules: parseRules(rulesOut, { table, priority, tableName: this.tableName }),
      addresses: parseAddresses(addressesOut).map((a) => this.held(a)),
      proxies: parseProxies(output(proxies, Phase.Address)).filter((a) => this.inEipNet(a)),
      arpRoutes: parseArpRoutes(output(arpRoutes, Phase.Address), protocol),
    };
  }

  private inEipNet(address: string): boolean {
    const value = parseIpv4(address);
    return value !== undefined && netContains(this.eipNet, value);
  }

  private held(a: KernelAddress): HeldAddress {
    return { ...a, inEipNet: this.inEipNet(a.address) };
  }

  /**
   * A fresh belief from a snapshot (which is never changed), keyed by the string objects of
   * `desired` where they are equal (see snapshot.ts).
   */
  private beliefOf(snapshot: RouteSnapshot, desired: RouteDesired): Belief {
    const { table, priority } = this.options;
    const sameSource = sameStrings(desired.ruleSources);
    const sources = new Map<string, SourceEntry>();
    const readRules: ReadRule[] = [];
    let irregular = false;
    for (const rule of snapshot.rules) {
      let source: string | undefined;
      const { key } = rule;
      if (rule.exact && key.startsWith("from ") && key.endsWith("/32")) {
        const address = key.slice(5, -3);
        if (
          !sources.has(address) &&
          canonicalAddress(address) === address &&
          rule.del === `rule del from ${address}/32 lookup ${table} priority ${priority}`
        ) {
          source = sameSource.get(address) ?? address;
          sources.set(source, { seen: 0, pos: sources.size, order: sources.size });
        }
      }
      if (source === undefined) irregular = true;
      readRules.push({ rule, source });
    }
    const belief: Belief = {
      routes: [...snapshot.routes],
      sources,
      irregularRules: irregular ? readRules : undefined,
      addresses32: new Map(),
      inEipNet32: 0,
      others: [],
      othersInEipNet: new Map(),
      nextSeq: 0,
      proxies: new Map(),
      arpRoutes: new Map(),
      otherArpRoutes: [],
    };
    const sameEip = sameStrings(desired.arpProxy?.eips ?? []);
    for (const address of snapshot.proxies) {
      belief.proxies.set(sameEip.get(address) ?? address, { dev: undefined, seen: 0 });
    }
    const otherArpRoutes: ArpRoute[] = [];
    for (const route of snapshot.arpRoutes) {
      const address = route.address;
      if (address === undefined || belief.arpRoutes.has(address)) {
        otherArpRoutes.push(route);
        continue;
      }
      belief.arpRoutes.set(sameEip.get(address) ?? address, { dev: route.dev, seen: 0 });
    }
    belief.otherArpRoutes = otherArpRoutes;
    const sameAddress = sameStrings(desired.gatewayAddresses);
    for (const a of snapshot.addresses) {
      const entry: AddressEntry = {
        address: sameAddress.get(a.address) ?? a.address,
        prefix: a.prefix,
        secondary: a.secondary,
        inEipNet: a.inEipNet,
        seq: belief.nextSeq++,
        seen: 0,
      };
      // Only canonical /32s are looked up by address: a desired address equal to another
      // spelling must be refused as invalid.
      fileAddress(belief, entry, a.prefix === 32 && canonicalAddress(a.address) === a.address);
    }
    return belief;
  }

  /**
   * The batch for the difference between `desired` and `belief`. Cost: one map lookup per
   * desired rule source and address that the belief holds; only the others are validated,
   * and the belief's rules and addresses are only walked when some of them must go.
   */
  private plan(desired: RouteDesired, belief: Belief): WritePlan {
    const { table, priority, gatewayDev } = this.options;
    validateRoutes(desired.routes);
    const pass = ++this.pass;
    const lines: BatchLine[] = [];
    let rereadAfter = false;

    // Routes. The first desired route of an identity wins (two desired routes to one dst
    // would contradict each other).
    const wantedRoutes = new Map<string, RouteSpec>();
    for (const route of desired.routes) {
      const identity = identityOf(canonicalDst(route.dst), "0", 0);
      if (!wantedRoutes.has(identity)) wantedRoutes.set(identity, route);
    }
    const current = new Map<string, KernelRoute>();
    for (const route of belief.routes) {
      if (!current.has(route.identity)) current.set(route.identity, route);
    }
    const order = { link: 0, via: 1, throw: 2 };
    const replaces = [...wantedRoutes.values()]
      .filter(
        (route) =>
          current.get(identityOf(canonicalDst(route.dst), "0", 0))?.key !== routeKey(route),
      )
      .sort((a, b) => order[a.kind] - order[b.kind]);
    for (const route of replaces) {
      lines.push({ text: routeReplaceLine(route, table), phase: Phase.PolicyRouting });
    }
    for (const route of belief.routes) {
      // A route at a wanted identity is overwritten by its replace, not deleted.
      if (wantedRoutes.has(route.identity)) continue;
      lines.push({ text: route.del, phase: Phase.PolicyRouting });
    }

    // Rules: one `from VMI/32` rule per desired source.
    const { sources } = belief;
    let ruleHits = 0;
    let adding: Set<string> | undefined;
    const addedSources: string[] = [];
    const addedPos: number[] = [];
    // An index loop: a for-of allocates an iterator result per item until the loop is
    // optimised, and these loops run over every binding.
    const list = desired.ruleSources;
    for (let pos = 0; pos < list.length; pos++) {
      const text = list[pos] as string;
      let source = text;
      let entry = sources.get(text);
      if (entry === undefined) {
        // Not a source we hold (those are canonical addresses): check it.
        const address = canonicalAddress(text);
        if (address === undefined) {
          throw new KernelError(Phase.PolicyRouting, `invalid rule source ${JSON.stringify(text)}`);
        }
        source = address;
        if (address !== text) entry = sources.get(address);
      }
      if (entry !== undefined) {
        if (entry.seen !== pass) {
          entry.seen = pass;
          entry.pos = pos;
          ruleHits++;
        }
        continue;
      }
      adding ??= new Set();
      if (adding.has(source)) continue;
      adding.add(source);
      addedSources.push(source);
      addedPos.push(pos);
    }
    const ruleDeletes: string[] = [];
    const plainDeletes: string[] = [];
    const removedSources: string[] = [];
    const irregularRules = belief.irregularRules;
    if (irregularRules !== undefined) {
      for (const { rule, source } of irregularRules) {
        if (source !== undefined && sources.get(source)?.seen === pass) continue;
        if (!rule.exact) rereadAfter = true;
        (rule.key.startsWith("other ") ? ruleDeletes : plainDeletes).push(rule.del);
      }
    } else if (ruleHits < sources.size) {
      // forEach: a for-of over the entries allocates a pair per rule.
      sources.forEach((entry, source) => {
        if (entry.seen !== pass) removedSources.push(source);
      });
      removedSources.sort((a, b) => (sources.get(a)?.order ?? 0) - (sources.get(b)?.order ?? 0));
      for (const source of removedSources) {
        plainDeletes.push(`rule del from ${source}/32 lookup ${table} priority ${priority}`);
      }
    }
    for (const source of addedSources) {
      lines.push({
        text: `rule add from ${source}/32 lookup ${table} priority ${priority}`,
        phase: Phase.PolicyRouting,
      });
    }
    for (const text of [...ruleDeletes, ...plainDeletes]) {
      lines.push({ text, phase: Phase.PolicyRouting });
    }

    // Addresses.
    const { addresses32, othersInEipNet } = belief;
    let addressHits = 0;
    const addedAddresses: string[] = [];
    adding = undefined;
    const addresses = desired.gatewayAddresses;
    for (let i = 0; i < addresses.length; i++) {
      const text = addresses[i] as string;
      let address = text;
      let entry = addresses32.get(text);
      if (entry === undefined) {
        const canonical = canonicalAddress(text);
        if (canonical === undefined) {
          throw new KernelError(Phase.Address, `invalid gateway address ${JSON.stringify(text)}`);
        }
        address = canonical;
        if (canonical !== text) entry = addresses32.get(canonical);
      }
      const others = othersInEipNet.size > 0 ? othersInEipNet.get(address) : undefined;
      if (others !== undefined) for (const other of others) other.seen = pass;
      if (entry !== undefined) {
        if (entry.seen !== pass) {
          entry.seen = pass;
          if (entry.inEipNet) addressHits++;
        }
        continue;
      }
      adding ??= new Set();
      if (adding.has(address)) continue;
      adding.add(address);
      addedAddresses.push(address);
    }
    // Ours: a /32 in the EIP network that is not wanted, another prefix of a wanted EIP.
    const deleted: AddressEntry[] = [];
    if (addressHits < belief.inEipNet32) {
      addresses32.forEach((a) => {
        if (a.inEipNet && a.seen !== pass) deleted.push(a);
      });
    }
    let otherDeleted = false;
    for (const a of belief.others) {
      if (!a.inEipNet) continue;
      if (a.prefix === 32 ? a.seen === pass : a.seen !== pass) continue;
      deleted.push(a);
      otherDeleted = true;
    }
    if (otherDeleted) deleted.sort((a, b) => a.seq - b.seq);
    for (const address of addedAddresses) {
      lines.push({ text: `address replace ${address}/32 dev ${gatewayDev}`, phase: Phase.Address });
    }
    for (const a of deleted) {
      lines.push({
        text: `address del ${a.address}/${a.prefix} dev ${gatewayDev}`,
        phase: Phase.Address,
      });
    }
    const heldCount = addresses32.size + belief.others.length;
    if (deleted.length > 0 && heldCount - deleted.length + addedAddresses.length === 0) {
      // Deleting a device's last IPv4 address makes the kernel flush every route through
      // that device, in every table (fib_disable_ip): write ours again after the deletion.
      const through = [...wantedRoutes.values()]
        .filter((route) => route.kind !== "throw" && route.dev === gatewayDev)
        .sort((a, b) => order[a.kind] - order[b.kind]);
      for (const route of through) {
        lines.push({ text: routeReplaceLine(route, table), phase: Phase.PolicyRouting });
      }
    }
    let promoteSecondaries = false;
    if (otherDeleted) {
      const deletedSet = new Set<KernelAddress>(deleted);
      for (const a of deleted) {
        if (a.prefix === 32) continue;
        // Secondaries of a /n come and go with its primary: re-read after such a change.
        rereadAfter = true;
        if (!a.secondary && this.hasOtherSecondaries(a, belief.others, deletedSet)) {
          promoteSecondaries = true;
        }
      }
    }

    const arp = this.planArpAnswers(desired.arpProxy, belief, pass);
    for (const line of arp.lines) lines.push({ text: line, phase: Phase.Address });

    const commit = (): void => {
      belief.routes = [...wantedRoutes].map(([identity, route]): KernelRoute => {
        const dst = canonicalDst(route.dst);
        return { identity, key: routeKey(route), del: routeDelLine(dst, "0", 0, table) };
      });
      if (irregularRules !== undefined) {
        // Every rule but the kept plain ones was deleted.
        sources.forEach((entry, source) => {
          if (entry.seen !== pass) sources.delete(source);
        });
        belief.irregularRules = undefined;
      } else {
        for (const source of removedSources) sources.delete(source);
      }
      addedSources.forEach((source, i) => {
        const at = addedPos[i] ?? 0;
        sources.set(source, { seen: pass, pos: at, order: at });
      });
      // Every rule left was wanted by this pass: they are now in the desired order.
      sources.forEach((entry) => {
        entry.order = entry.pos;
      });
      if (otherDeleted) {
        const gone = new Set(deleted);
        const others = belief.others.filter((a) => !gone.has(a));
        belief.others = [];
        belief.othersInEipNet = new Map();
        for (const a of others) fileAddress(belief, a, false);
      }
      for (const a of deleted) {
        if (addresses32.get(a.address) !== a) continue;
        addresses32.delete(a.address);
        if (a.inEipNet) belief.inEipNet32--;
      }
      for (const address of addedAddresses) {
        const held = this.held({ address, prefix: 32, secondary: false });
        fileAddress(belief, { ...held, seq: belief.nextSeq++, seen: pass }, true);
      }
      arp.commit();
    };

    const left = deleted.filter((a) => a.seen !== pass).map((a) => a.address);
    return {
      lines,
      promoteSecondaries,
      rereadAfter,
      commit,
      arrived: [...addedAddresses, ...arp.addedProxies],
      left: [...left, ...arp.removedProxies],
    };
  }

  /**
   * The batch lines of the ARP answers (see the header for their order), with a commit that
   * updates the belief. Costs a lookup per wanted EIP held already, like the addresses.
   */
  private planArpAnswers(
    spec: ArpProxySpec | undefined,
    belief: Belief,
    pass: number,
  ): { lines: string[]; addedProxies: string[]; removedProxies: string[]; commit(): void } {
    const { gatewayDev, protocol } = this.options;
    const { proxies, arpRoutes } = belief;
    const eips = spec?.eips ?? [];
    const routeDev = spec?.routeDev ?? "";
    if (spec !== undefined && (!isDeviceName(routeDev) || routeDev === gatewayDev)) {
      throw new KernelError(Phase.Address, `invalid route device ${JSON.stringify(routeDev)}`);
    }
    let proxyHits = 0;
    let routeHits = 0;
    const addedProxies: string[] = [];
    const addedRoutes: string[] = [];
    const replacedRoutes: string[] = [];
    let adding: Set<string> | undefined;
    for (let i = 0; i < eips.length; i++) {
      const text = eips[i] as string;
      let address = text;
      let proxy = proxies.get(text);
      let route = arpRoutes.get(text);
      if (proxy === undefined || route === undefined) {
        const canonical = canonicalAddress(text);
        if (canonical === undefined || !this.inEipNet(canonical)) {
          throw new KernelError(Phase.Address, `invalid EIP ${JSON.stringify(text)}`);
        }
        address = canonical;
        if (canonical !== text) {
          proxy = proxies.get(canonical);
          route = arpRoutes.get(canonical);
        }
      }
      if (proxy !== undefined && proxy.seen !== pass) {
        proxy.seen = pass;
        proxyHits++;
      }
      if (route !== undefined && route.seen !== pass) {
        route.seen = pass;
        routeHits++;
        if (route.dev !== routeDev) replacedRoutes.push(address);
      }
      if (proxy !== undefined && route !== undefined) continue;
      adding ??= new Set();
      if (adding.has(address)) continue;
      adding.add(address);
      if (proxy === undefined) addedProxies.push(address);
      if (route === undefined) addedRoutes.push(address);
    }
    const removedProxies: string[] = [];
    if (proxyHits < proxies.size) {
      proxies.forEach((entry, address) => {
        if (entry.seen !== pass) removedProxies.push(address);
      });
    }
    const removedRoutes: string[] = [];
    if (routeHits < arpRoutes.size) {
      arpRoutes.forEach((entry, address) => {
        if (entry.seen !== pass) removedRoutes.push(address);
      });
    }
    const lines: string[] = [];
    const tail = `dev ${routeDev} table main proto ${protocol}`;
    for (const address of addedRoutes) lines.push(`route add ${address}/32 ${tail}`);
    for (const address of replacedRoutes) lines.push(`route replace ${address}/32 ${tail}`);
    for (const address of addedProxies) {
      lines.push(`neigh replace proxy ${address} dev ${gatewayDev}`);
    }
    for (const address of removedProxies) {
      lines.push(`neigh del proxy ${address} dev ${gatewayDev}`);
    }
    for (const address of removedRoutes) {
      lines.push(`route del ${address}/32 table main proto ${protocol}`);
    }
    for (const route of belief.otherArpRoutes) lines.push(route.del);
    return {
      lines,
      addedProxies,
      removedProxies,
      commit() {
        for (const address of removedProxies) proxies.delete(address);
        for (const address of removedRoutes) arpRoutes.delete(address);
        for (const address of addedProxies) proxies.set(address, { dev: undefined, seen: pass });
        for (const address of [...addedRoutes, ...replacedRoutes]) {
          arpRoutes.set(address, { dev: routeDev, seen: pass });
        }
        belief.otherArpRoutes = [];
      },
    };
  }

  /** Whether deleting primary `a` would also delete a secondary we are not deleting. */
  private hasOtherSecondaries(
    a: KernelAddress,
    all: readonly KernelAddress[],
    deleted: ReadonlySet<KernelAddress>,
  ): boolean {
    const net = parseIpv4Net(`${a.address}/${a.prefix}`, { allowHostBits: true });
    if (net === undefined) return true;
    return all.some((b) => {
      if (b === a || deleted.has(b) || !b.secondary || b.prefix !== a.prefix) return false;
      const value = parseIpv4(b.address);
      return value !== undefined && netContains(net, value);
    });
  }

  private async promoteSecondaries(): Promise<void> {
    const key = `net/ipv4/conf/${this.options.gatewayDev}/promote_secondaries`;
    try {
      await this.runner.run("sysctl", ["-w", `${key}=1`]);
    } catch (err) {
      throw new KernelError(Phase.Address, `sysctl: ${errorMessage(err)}`, { cause: err });
    }
  }

  private async runBatch(lines: readonly BatchLine[]): Promise<void> {
    const input = lines.map((l) => l.text).join("\n") + "\n";
    try {
      await this.runner.run("ip", ["-force", "-batch", "-"], { input });
    } catch (err) {
      const stderr = err instanceof CommandError ? err.stderr : "";
      const failed = failedBatchLines(stderr);
      const phases = (failed.length > 0 ? failed.map((n) => lines[n - 1]) : lines)
        .filter((l): l is BatchLine => l !== undefined)
        .map((l) => l.phase);
      const phase = phases.length > 0 ? (Math.min(...phases) as Phase) : Phase.PolicyRouting;
      const detail = failed.map((n) => `line ${n} (${lines[n - 1]?.text ?? "?"})`).join(", ");
      throw new KernelError(
        phase,
        `ip batch failed${detail ? ` at ${detail}` : ""}: ${stderr.trim() || errorMessage(err)}`,
        { cause: err },
      );
    }
  }
}

const prepared = new PreparedBeliefs<RouteSnapshot, Belief>();

/**
 * Files an address of the device in the belief: a canonical /32 (`byAddress`) under its
 * address, unless that address is there already; anything else among the others.
 */
function fileAddress(belief: Belief, a: AddressEntry, byAddress: boolean): void {
  if (byAddress && !belief.addresses32.has(a.address)) {
    belief.addresses32.set(a.address, a);
    if (a.inEipNet) belief.inEipNet32++;
    return;
  }
  belief.others.push(a);
  if (!a.inEipNet) return;
  const same = belief.othersInEipNet.get(a.address);
  if (same === undefined) belief.othersInEipNet.set(a.address, [a]);
  else same.push(a);
}

function asKernelError(err: unknown): KernelError {
  if (err instanceof KernelError) return err;
  return new KernelError(Phase.PolicyRouting, `ip: ${errorMessage(err)}`, { cause: err });
}

/**
 * `ip route show table N` fails with "FIB table does not exist" until the first route is
 * added to table N (a fresh node): that is an empty table, not an error.
 */
function noTableYet(err: unknown): { stdout: string; stderr: string } {
  if (err instanceof CommandError && err.stderr.includes("FIB table does not exist")) {
    return { stdout: "[]", stderr: "" };
  }
  throw err;
}

function isDeviceName(name: string): boolean {
  return /^[^\s/]{1,15}$/.test(name) && name !== "." && name !== "..";
}

/**
 * Rejects routes ip could not parse: a syntax error makes `ip -batch` exit at once, even with
 * -force, without running the remaining lines and without a `Command failed` line. (Rule
 * sources and addresses are checked while they are canonicalised.)
 */
function validateRoutes(routes: readonly RouteSpec[]): void {
  for (const route of routes) {
    const badDst = route.dst !== "default" && parseIpv4Net(route.dst) === undefined;
    const badGateway = route.kind === "via" && parseIpv4(route.gateway) === undefined;
    const badDev = route.kind !== "throw" && !isDeviceName(route.dev);
    if (badDst || badGateway || badDev) {
      throw new KernelError(Phase.PolicyRouting, `invalid route ${JSON.stringify(route)}`);
    }
  }
}

/** The 1-based line numbers of `Command failed -:N` reports in ip -batch's stderr. */
export function failedBatchLines(stderr: string): number[] {
  const lines: number[] = [];
  for (const match of stderr.matchAll(/Command failed -:(\d+)/g)) lines.push(Number(match[1]));
  return lines;
}

const RESERVED_TABLES =
  "#\n# reserved values\n#\n255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n#\n";

function parseTableId(text: string): number | undefined {
  if (/^0x[0-9a-f]+$/i.test(text)) return Number.parseInt(text.slice(2), 16);
  if (/^\d+$/.test(text)) return Number(text);
  return undefined;
}

/**
 * Makes sure `path` has a line mapping table `id` to `name`, so `ip` shows our table by name.
 * Creates the directory and file when missing (with the reserved names), appends the line
 * otherwise; never duplicates it; writes atomically (temp file + rename). Resolves to true
 * when it wrote the file.
 */
export async function ensureRouteTableName(
  path = "/etc/iproute2/rt_tables",
  id: number = ROUTE_TABLE_ID,
  name: string = ROUTE_TABLE_NAME,
): Promise<boolean> {
  let text: string;
  let mode = 0o644;
  try {
    text = await readFile(path, "utf8");
    mode = (await stat(path)).mode & 0o7777;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    text = RESERVED_TABLES;
  }
  for (const line of text.split("\n")) {
    const fields = line.replace(/#.*/, "").trim().split(/\s+/);
    if (fields.length >= 2 && parseTableId(fields[0] ?? "") === id && fields[1] === name) {
      return false;
    }
  }
  const next = `${text}${text === "" || text.endsWith("\n") ? "" : "\n"}${id}\t${name}\n`;
  await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await writeFile(temp, next, { mode });
    await chmod(temp, mode);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw err;
  }
  return true;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
