// RouteManager: the policy routing of bound VMIs, the EIPs held as addresses on the gateway
// device, and, with --arp-poisoning, the kernel's ARP answers for EIPs the node does not
// hold: all that `ip` writes. It runs the reads and the one batch; what each part owns, and
// how it plans its lines, is in its own file:
// - policy-routes.ts: the routes of table 1001 and the `from VMI/32` rules at priority 1001;
// - gateway-addresses.ts: the EIPs held as /32 addresses on the gateway device;
// - arp-answers.ts: the proxy neighbour entries and their host routes in the main table;
// - rt-tables.ts (used by the agent at start): the table's name in rt_tables.
// (The gateway device's arp_ignore and proxy_delay are SysctlManager's.)
//
// How it reads: `ip -json route show table 1001`, `ip -json -N rule show`, `ip -json -4
// addr show dev <gatewayDev>`, `ip -4 -json neigh show proxy dev <gatewayDev>` and `ip
// -json route show table main proto 225`, in parallel.
//
// How it writes: one `ip -force -batch -` call whose stdin holds, in this order, the policy
// routing's lines, the addresses' lines (and, when they delete the device's last IPv4
// address, our routes through it again: the kernel flushes them), then the ARP answers'.
// `-force` makes ip run every line even after one fails; it reports `Command failed -:N` for
// each failed line N, which maps back to the phase of that line (routes and rules:
// PolicyRouting; addresses and ARP answers: Address); the lowest failing phase wins. A line
// ip cannot parse is different: ip exits at once, skipping the rest of the batch, without a
// `Command failed` line; so every desired address, route and device name is validated
// before anything is written. One exception to "one call": when the addresses' plan deletes
// the primary of a subnet with other secondaries, the manager first sets
// net.ipv4.conf.<dev>.promote_secondaries=1 through the agent's SysctlWriter (sysctl.ts),
// which honours --proc-sys.
//
// Belief: after a successful write the manager believes the kernel holds what it wrote and
// does not read again unless asked (reread). It forgets the belief after any failure, and
// after a write that a part says leaves it unknown, so the next apply re-reads. Each part
// updates its belief in place, so the cost of a plan follows the change, not the number of
// bindings. After a write the manager records which EIPs arrived on the node (an address or
// proxy entry added) and which left in its ArpArrivals (arp-arrivals.ts), from which the ARP
// announcer takes what to send gratuitous ARP for. read() and adopt() let
// the caller do the slow `ip -json ... show` apart from apply().
import {
  type ArpProxySpec,
  type DesiredState,
  ROUTE_TABLE_NAME,
  type RouteSpec,
} from "../model/desired.js";
import { type Ipv4Net, netContains, parseIpv4, parseIpv4Net } from "../common/ipv4.js";
import { type ArpBelief, ArpAnswers } from "./arp-answers.js";
import type { ArpArrivals } from "./arp-arrivals.js";
import { type AddressBelief, GatewayAddresses, type HeldAddress } from "./gateway-addresses.js";
import {
  type ArpRoute,
  type KernelProxy,
  type KernelRoute,
  type KernelRule,
  isDeviceName,
  parseAddresses,
  parseArpRoutes,
  parseProxies,
  parseRoutes,
  parseRules,
} from "./iproute-parse.js";
import { KernelError, Phase, type KernelManager } from "./manager.js";
import { PolicyRoutes, type RoutingBelief } from "./policy-routes.js";
import { CommandError, type CommandRunner } from "./runner.js";
import { SysctlWriter } from "./sysctl.js";
import { PreparedBeliefs } from "./snapshot.js";

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
   * Where a successful write records the EIPs it made this node answer ARP for (an address
   * added to the gateway device, or a proxy entry added) and those it stopped answering for.
   */
  readonly arrivals?: ArpArrivals;
  /**
   * Writes promote_secondaries (the agent's one writer, which honours --proc-sys); when
   * absent, `sysctl -w` through the runner.
   */
  readonly sysctl?: SysctlWriter;
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

interface Belief {
  readonly routing: RoutingBelief;
  readonly addresses: AddressBelief;
  readonly arp: ArpBelief;
}

interface BatchLine {
  readonly text: string;
  readonly phase: Phase;
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
  private readonly routing: PolicyRoutes;
  private readonly addresses: GatewayAddresses;
  private readonly arp: ArpAnswers;
  private readonly sysctl: SysctlWriter;
  /** True until the first read: the only one that adopts unmarked state of bound EIPs. */
  private firstRead = true;

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
    const inEipNet = (address: string) => this.inEipNet(address);
    const { table, priority, gatewayDev, protocol } = options;
    this.routing = new PolicyRoutes({ table, priority });
    this.addresses = new GatewayAddresses({ gatewayDev, inEipNet });
    this.arp = new ArpAnswers({ gatewayDev, protocol, inEipNet });
    this.sysctl = options.sysctl ?? new SysctlWriter(runner);
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
      const { gatewayDev } = this.options;
      /** Wanted EIPs that someone else holds here: never taken over (the apply fails). */
      const conflicts: string[] = [];
      const routing = this.routing.plan(desired, belief.routing);
      const addresses = this.addresses.plan(desired.gatewayAddresses, belief.addresses, conflicts);
      const arp = this.arp.plan(desired.arpProxy, belief.arp, conflicts);
      const lines: BatchLine[] = [
        ...routing.lines.map((text) => ({ text, phase: Phase.PolicyRouting })),
        ...addresses.lines.map((text) => ({ text, phase: Phase.Address })),
        ...(addresses.lastAddressGone ? routing.through(gatewayDev) : []).map((text) => ({
          text,
          phase: Phase.PolicyRouting,
        })),
        ...arp.lines.map((text) => ({ text, phase: Phase.Address })),
      ];
      if (lines.length > 0) {
        // Forget the belief before writing: a failed or partial write leaves it unknown.
        this.belief = undefined;
        if (addresses.promoteSecondaries) await this.promoteSecondaries();
        await this.runBatch(lines);
        this.addresses.forget(addresses.deleted);
        const { arrivals } = this.options;
        arrivals?.remove([...addresses.left, ...arp.removedProxies]);
        arrivals?.add([...addresses.added, ...arp.addedProxies]);
        if (!routing.rereadAfter && !addresses.rereadAfter) {
          routing.commit();
          addresses.commit();
          arp.commit();
          this.belief = belief;
        }
      }
      if (conflicts.length > 0) {
        throw new KernelError(
          Phase.Address,
          `not taking over ${conflicts.join(", ")}: held on ${gatewayDev} by someone else`,
        );
      }
      return lines.length;
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
      addresses: parseAddresses(addressesOut).map((a) => this.addresses.held(a)),
      proxies: parseProxies(output(proxies, Phase.Address)).filter((p) => this.inEipNet(p.address)),
      arpRoutes: parseArpRoutes(output(arpRoutes, Phase.Address), protocol),
    };
  }

  private inEipNet(address: string): boolean {
    const value = parseIpv4(address);
    return value !== undefined && netContains(this.eipNet, value);
  }

  /** A fresh belief from a snapshot (which is never changed); see each part's beliefOf. */
  private beliefOf(snapshot: RouteSnapshot, desired: RouteDesired): Belief {
    const adopting = this.firstRead;
    this.firstRead = false;
    return {
      routing: this.routing.beliefOf(snapshot.routes, snapshot.rules, desired.ruleSources),
      arp: this.arp.beliefOf(snapshot.proxies, snapshot.arpRoutes, desired.arpProxy, adopting),
      addresses: this.addresses.beliefOf(snapshot.addresses, desired.gatewayAddresses, adopting),
    };
  }

  private async promoteSecondaries(): Promise<void> {
    const key = `net/ipv4/conf/${this.options.gatewayDev}/promote_secondaries`;
    try {
      await this.sysctl.write([{ key, value: "1" }]);
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

/** The 1-based line numbers of `Command failed -:N` reports in ip -batch's stderr. */
export function failedBatchLines(stderr: string): number[] {
  const lines: number[] = [];
  for (const match of stderr.matchAll(/Command failed -:(\d+)/g)) lines.push(Number(match[1]));
  return lines;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
