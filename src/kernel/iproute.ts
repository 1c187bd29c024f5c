// RouteManager: the policy routing of bound VMIs (routes of table eip_route, `from VMI`
// rules), the EIPs held as addresses on the gateway device, and, with --arp-poisoning, the
// kernel's ARP answers for EIPs the node does not hold (proxy neighbour entries).
//
// What it owns:
// - every route of table 1001: the table holds exactly the desired routes (link route to the
//   EIP network, default via the gateway, throw routes for the internal nets);
// - every ip rule at priority 1001 whose table is 1001 (shown as "eip_route" when that name
//   is registered): exactly one `from VMI/32 lookup 1001` per bound VMI, nothing else;
// - on the gateway device, the addresses it marked: each EIP it adds is a /32 with the label
//   `<dev>:eip` (ourAddressLabel; addresses have no other mark iproute2 6.1 can write, and a
//   label cannot change in place). Adopted at the first read only, while their EIP is bound
//   (the saved binding is the record): the seed's EIPs with the EIP network's prefix (e.g.
//   /24), replaced by a marked /32 without a gap (added before the old one is deleted), and
//   an earlier version's unmarked /32s, kept as they are and remembered as ours until
//   deleted. Any other address is never touched, even inside the EIP network (the node's
//   own /24, a keepalived or kube-vip VIP); a bound EIP that someone else holds there is
//   never taken over: the apply fails with Phase.Address naming it. (A device name too long
//   for the label leaves only the in-memory record: such addresses are ours while this
//   process knows it added them.)
// - on the gateway device, the proxy neighbour entries with protocol `protocol` (225)
//   (`ip neigh replace proxy EIP dev <gatewayDev> protocol 225`: the kernel answers ARP for
//   EIP there with the device's MAC, as long as forwarding is on and the route to EIP leaves
//   through another device); an unmarked entry of a bound EIP is adopted at the first read
//   and marked in place; any other entry is never touched;
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
// address additions (`address add EIP/32 label <dev>:eip`: an address someone else added
// since the read fails the line rather than become ours), address deletions, then the ARP
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
import {
  type ArpProxySpec,
  type DesiredState,
  ROUTE_TABLE_NAME,
  type RouteSpec,
} from "../model/desired.js";
import { type Ipv4Net, netContains, parseIpv4, parseIpv4Net } from "../common/ipv4.js";
import { canonicalAddress } from "./canonical.js";
import { type DeltaEntry, DeltaTracker } from "./delta.js";
import {
  type ArpRoute,
  type KernelAddress,
  type KernelProxy,
  type KernelRoute,
  type KernelRule,
  canonicalDst,
  identityOf,
  ourAddressLabel,
  parseAddresses,
  parseArpRoutes,
  parseProxies,
  parseRoutes,
  parseRules,
  routeDelLine,
  routeKey,
  routeReplaceLine,
} from "./iproute-parse.js";
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

/**
 * An address of the gateway device, with whether it lies in the EIP network and whether it
 * carries our mark (the label `<dev>:eip`).
 */
export interface HeldAddress extends KernelAddress {
  readonly inEipNet: boolean;
  readonly marked: boolean;
}

/**
 * What read() returns: table 1001, our rules, the gateway device's addresses, our proxy
 * entries (those in the EIP network) and our main-table routes.
 */
export interface RouteSnapshot {
  readonly routes: readonly KernelRoute[];
  readonly rules: readonly KernelRule[];
  readonly addresses: readonly HeldAddress[];
  readonly proxies: readonly KernelProxy[];
  readonly arpRoutes: readonly ArpRoute[];
}

/** A held address in the belief. */
interface AddressEntry extends HeldAddress {
  /** Marked, or recorded as ours: only such an address is ever deleted. */
  readonly ours: boolean;
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

/** A proxy entry, or a host route with its device (undefined: not a plain `dev D` route). */
interface ArpEntry extends DeltaEntry {
  dev: string | undefined;
}

interface Belief {
  /** The routes of our table (a handful). */
  routes: readonly KernelRoute[];
  /** Our plain `from VMI/32 lookup T priority P` rules, by VMI. */
  readonly sources: DeltaTracker<DeltaEntry>;
  /**
   * Every rule as read, in kernel order, when some are not plain /32 rules or are copies:
   * the next write deletes those, in this order. Undefined once the rules are just `sources`.
   */
  irregularRules: readonly ReadRule[] | undefined;
  /** The /32 addresses of the gateway device, by canonical address (see fileAddress). */
  readonly addresses32: Map<string, AddressEntry>;
  /** How many of addresses32 are ours. */
  ours32: number;
  /** The other addresses of the device (mostly other prefixes), in device order. */
  others: AddressEntry[];
  /** Those of `others` that lie in the EIP network, by address. */
  othersInEipNet: Map<string, AddressEntry[]>;
  nextSeq: number;
  /** Our proxy entries on the gateway device, by EIP. */
  readonly proxies: DeltaTracker<ArpEntry>;
  /** Proxy entries in the EIP network that are not ours (no protocol mark): never touched. */
  readonly foreignProxies: Set<string>;
  /** Our host routes in the main table, by EIP. */
  readonly arpRoutes: DeltaTracker<ArpEntry>;
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
  /** The addresses ("A/P") the lines delete. */
  readonly deleted: readonly string[];
  /** Wanted EIPs someone else holds on the gateway device: left alone, the apply fails. */
  readonly conflicts: readonly string[];
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
  /** Our mark on the addresses we add; undefined when `<dev>:eip` is longer than a label may be. */
  private readonly label: string | undefined;
  /** True until the first read: the only one that adopts unmarked state of bound EIPs. */
  private firstRead = true;
  /** Unmarked addresses ("A/P") that are ours: adopted at start, or added without a label. */
  private readonly recorded = new Set<string>();
  /** Unmarked proxy entries of bound EIPs adopted at start, until a write marks them. */
  private readonly adoptedProxies = new Set<string>();

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
    this.label = ourAddressLabel(options.gatewayDev);
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
      if (plan.lines.length > 0) {
        // Forget the belief before writing: a failed or partial write leaves it unknown.
        this.belief = undefined;
        if (plan.promoteSecondaries) await this.promoteSecondaries();
        await this.runBatch(plan.lines);
        for (const a of plan.deleted) this.recorded.delete(a);
        if (plan.left.length > 0) this.options.onEipsLeft?.(plan.left);
        if (plan.arrived.length > 0) this.options.onEipsArrived?.(plan.arrived);
        if (!plan.rereadAfter) {
          plan.commit();
          this.belief = belief;
        }
      }
      if (plan.conflicts.length > 0) {
        throw new KernelError(
          Phase.Address,
          `not taking over ${plan.conflicts.join(", ")}: held on ${this.options.gatewayDev} by someone else`,
        );
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
      proxies: parseProxies(output(proxies, Phase.Address)).filter((p) => this.inEipNet(p.address)),
      arpRoutes: parseArpRoutes(output(arpRoutes, Phase.Address), protocol),
    };
  }

  private inEipNet(address: string): boolean {
    const value = parseIpv4(address);
    return value !== undefined && netContains(this.eipNet, value);
  }

  private held(a: KernelAddress): HeldAddress {
    const marked = this.label !== undefined && a.label === this.label;
    return { ...a, inEipNet: this.inEipNet(a.address), marked };
  }

  /**
   * A fresh belief from a snapshot (which is never changed), keyed by the string objects of
   * `desired` where they are equal (see snapshot.ts).
   */
  private beliefOf(snapshot: RouteSnapshot, desired: RouteDesired): Belief {
    const { table, priority } = this.options;
    const adopting = this.firstRead;
    this.firstRead = false;
    const sameSource = sameStrings(desired.ruleSources);
    const sources = new Map<string, DeltaEntry>();
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
      sources: new DeltaTracker(sources),
      irregularRules: irregular ? readRules : undefined,
      addresses32: new Map(),
      ours32: 0,
      others: [],
      othersInEipNet: new Map(),
      nextSeq: 0,
      proxies: new DeltaTracker(),
      foreignProxies: new Set(),
      arpRoutes: new DeltaTracker(),
      otherArpRoutes: [],
    };
    const sameEip = sameStrings(desired.arpProxy?.eips ?? []);
    for (const { address, protocol } of snapshot.proxies) {
      if (protocol === this.options.protocol) {
        const { believed } = belief.proxies;
        const order = believed.size;
        believed.set(sameEip.get(address) ?? address, {
          dev: undefined,
          seen: 0,
          pos: order,
          order,
        });
      } else if (adopting && sameEip.has(address)) {
        // An earlier version's entry of a bound EIP: marked in place by the next write.
        this.adoptedProxies.add(address);
      } else if (!this.adoptedProxies.has(address)) {
        belief.foreignProxies.add(address);
      }
    }
    const otherArpRoutes: ArpRoute[] = [];
    for (const route of snapshot.arpRoutes) {
      const address = route.address;
      const { believed } = belief.arpRoutes;
      if (address === undefined || believed.has(address)) {
        otherArpRoutes.push(route);
        continue;
      }
      const order = believed.size;
      believed.set(sameEip.get(address) ?? address, { dev: route.dev, seen: 0, pos: order, order });
    }
    belief.otherArpRoutes = otherArpRoutes;
    const sameAddress = sameStrings(desired.gatewayAddresses);
    for (const a of snapshot.addresses) {
      const key = `${a.address}/${a.prefix}`;
      // The seed's /24 EIPs and an earlier version's unmarked /32s: adopted at start while
      // bound (the binding is the record), remembered until deleted. A label cannot be
      // changed in place, so they stay unmarked.
      if (adopting && a.inEipNet && !a.marked && sameAddress.has(a.address)) {
        this.recorded.add(key);
      }
      const entry: AddressEntry = {
        address: sameAddress.get(a.address) ?? a.address,
        prefix: a.prefix,
        secondary: a.secondary,
        inEipNet: a.inEipNet,
        marked: a.marked,
        ours: a.inEipNet && (a.marked || this.recorded.has(key)),
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
    const ruleDelta = sources.diff(desired.ruleSources, {
      // Not a source we hold (those are canonical addresses): check it.
      canonical: (text) => {
        const address = canonicalAddress(text);
        if (address === undefined) {
          throw new KernelError(Phase.PolicyRouting, `invalid rule source ${JSON.stringify(text)}`);
        }
        return address;
      },
    });
    const addedSources = ruleDelta.adds;
    const ruleDeletes: string[] = [];
    const plainDeletes: string[] = [];
    const irregularRules = belief.irregularRules;
    if (irregularRules !== undefined) {
      for (const { rule, source } of irregularRules) {
        if (source !== undefined && sources.wanted(ruleDelta, source)) continue;
        if (!rule.exact) rereadAfter = true;
        (rule.key.startsWith("other ") ? ruleDeletes : plainDeletes).push(rule.del);
      }
    } else {
      for (const source of ruleDelta.deletes) {
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
    let adding: Set<string> | undefined;
    const addresses = desired.gatewayAddresses;
    /** Wanted EIPs that someone else holds here: never taken over (the apply fails). */
    const conflicts: string[] = [];
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
      let foreign = false;
      if (others !== undefined) {
        for (const other of others) {
          other.seen = pass;
          if (!other.ours) foreign = true;
        }
      }
      if (entry !== undefined) {
        if (!entry.ours) {
          conflicts.push(address);
        } else if (entry.seen !== pass) {
          entry.seen = pass;
          addressHits++;
        }
        continue;
      }
      if (foreign) {
        conflicts.push(address);
        continue;
      }
      adding ??= new Set();
      if (adding.has(address)) continue;
      adding.add(address);
      addedAddresses.push(address);
    }
    // Deleted: an address of ours that is not wanted, another prefix of a wanted EIP.
    const deleted: AddressEntry[] = [];
    if (addressHits < belief.ours32) {
      addresses32.forEach((a) => {
        if (a.ours && a.seen !== pass) deleted.push(a);
      });
    }
    let otherDeleted = false;
    for (const a of belief.others) {
      if (!a.ours || (a.prefix === 32 && a.seen === pass)) continue;
      deleted.push(a);
      otherDeleted = true;
    }
    if (otherDeleted) deleted.sort((a, b) => a.seq - b.seq);
    const label = this.label === undefined ? "" : ` label ${this.label}`;
    for (const address of addedAddresses) {
      // `add`, not `replace`: an address someone added since the read fails the line
      // instead of becoming ours.
      lines.push({
        text: `address add ${address}/32 dev ${gatewayDev}${label}`,
        phase: Phase.Address,
      });
      // Without a label the record is the only mark: kept from the write on.
      if (this.label === undefined) this.recorded.add(`${address}/32`);
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

    const arp = this.planArpAnswers(desired.arpProxy, belief, conflicts);
    for (const line of arp.lines) lines.push({ text: line, phase: Phase.Address });

    const commit = (): void => {
      belief.routes = [...wantedRoutes].map(([identity, route]): KernelRoute => {
        const dst = canonicalDst(route.dst);
        return { identity, key: routeKey(route), del: routeDelLine(dst, "0", 0, table) };
      });
      // Every rule but the kept plain ones was deleted (with irregular rules, those too).
      sources.commit(ruleDelta, (_source, base) => base);
      belief.irregularRules = undefined;
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
        if (a.ours) belief.ours32--;
      }
      for (const address of addedAddresses) {
        const held = this.held({
          address,
          prefix: 32,
          secondary: false,
          ...(this.label === undefined ? {} : { label: this.label }),
        });
        fileAddress(belief, { ...held, ours: true, seq: belief.nextSeq++, seen: pass }, true);
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
      deleted: deleted.map((a) => `${a.address}/${a.prefix}`),
      conflicts,
    };
  }

  /**
   * The batch lines of the ARP answers (see the header for their order), with a commit that
   * updates the belief. Costs a lookup per wanted EIP held already, like the addresses.
   */
  private planArpAnswers(
    spec: ArpProxySpec | undefined,
    belief: Belief,
    conflicts: string[],
  ): {
    lines: string[];
    addedProxies: readonly string[];
    removedProxies: readonly string[];
    commit(): void;
  } {
    const { gatewayDev, protocol } = this.options;
    const { proxies, arpRoutes } = belief;
    const adoptedProxies = this.adoptedProxies;
    const eips = spec?.eips ?? [];
    const routeDev = spec?.routeDev ?? "";
    if (spec !== undefined && (!isDeviceName(routeDev) || routeDev === gatewayDev)) {
      throw new KernelError(Phase.Address, `invalid route device ${JSON.stringify(routeDev)}`);
    }
    const canonical = (text: string): string => {
      const address = canonicalAddress(text);
      if (address === undefined || !this.inEipNet(address)) {
        throw new KernelError(Phase.Address, `invalid EIP ${JSON.stringify(text)}`);
      }
      return address;
    };
    const proxyDelta = proxies.diff(eips, {
      canonical,
      refused: (address) => {
        // Someone else's answer: neither it nor the route to that address is ours to write.
        if (!belief.foreignProxies.has(address)) return false;
        conflicts.push(address);
        return true;
      },
    });
    const routeDelta = arpRoutes.diff(eips, {
      canonical,
      changed: (route) => route.dev !== routeDev,
      refused: (address) => belief.foreignProxies.has(address),
    });
    const addedProxies = proxyDelta.adds;
    const removedProxies = proxyDelta.deletes;
    const addedRoutes = routeDelta.adds;
    const replacedRoutes = routeDelta.changes;
    const removedRoutes = routeDelta.deletes;
    const lines: string[] = [];
    const tail = `dev ${routeDev} table main proto ${protocol}`;
    for (const address of addedRoutes) lines.push(`route add ${address}/32 ${tail}`);
    for (const address of replacedRoutes) lines.push(`route replace ${address}/32 ${tail}`);
    for (const address of addedProxies) {
      lines.push(`neigh replace proxy ${address} dev ${gatewayDev} protocol ${protocol}`);
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
        proxies.commit(proxyDelta, (_address, base) => ({ ...base, dev: undefined }));
        for (const address of addedProxies) adoptedProxies.delete(address);
        arpRoutes.commit(routeDelta, (_address, base) => ({ ...base, dev: routeDev }));
        for (const address of replacedRoutes) {
          (arpRoutes.believed.get(address) as ArpEntry).dev = routeDev;
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
    if (a.ours) belief.ours32++;
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

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
