// The one builder of the kernel's subsystems, in their order: the agent (agent.ts) runs them
// in its apply loop, the benchmark (bench/agent-bench.ts) times them one by one, so both
// write the kernel the same way.
//
// The NAT and forward accepts come from one of two dataplanes (--dataplane, see
// docs/dataplanes.md), and the other one's state goes, so a restart with the other flag
// switches a live node. The new dataplane is written first and the old one removed after,
// in the same apply: every packet meets one of them, or both (a connection keeps the NAT
// its first packet got), never neither.
// - iptables: our sets and chains (iptables-dataplane.ts: a set's new members only once
//   the rules that NAT them are written), routes, settings, then the nftables dataplane's
//   FORWARD rule and table are deleted if they are there.
// - nftables: our table first, then the iptables side: only the one FORWARD rule that
//   accepts what our table marked (plan.ts NFT_FORWARD_JUMP), every jump of the iptables
//   dataplane deleted, then its chains and ipsets; routes and settings as with iptables.
import {
  ARP_ROUTE_PROTOCOL,
  type DesiredState,
  ROUTE_TABLE_ID,
  RULE_PRIORITY,
} from "../model/desired.js";
import type { ArpArrivals } from "./arp-arrivals.js";
import { RouteManager, routeDesired } from "./iproute.js";
import { IpsetManager } from "./ipset.js";
import { IptablesManager, type IptablesDesired, type IptablesMode } from "./iptables.js";
import { IptablesDataplane, iptablesDataplaneMissing } from "./iptables-dataplane.js";
import { IptablesLeftovers, leftoversSubsystem } from "./iptables-leftovers.js";
import { NftablesManager } from "./nftables.js";
import { NFT_FORWARD_JUMP } from "../model/plan.js";
import type { CommandRunner } from "./runner.js";
import { type Subsystem, managed } from "./subsystem.js";
import { SysctlManager, SysctlWriter } from "./sysctl.js";
import {
  iptablesMissing,
  nftablesMissing,
  routeMissing,
  sysctlMissing,
} from "./readback-checks.js";

export type DataplaneMode = "iptables" | "nftables";

export interface KernelSubsystemsOptions {
  readonly runner: CommandRunner;
  /** --dataplane: which one writes the NAT and forward accepts. */
  readonly dataplane: DataplaneMode;
  readonly iptablesMode: IptablesMode;
  readonly gatewayDev: string;
  /** Canonical CIDR of the EIP network. */
  readonly eipCidr: string;
  /** --proc-sys: kernel settings as files under this directory. */
  readonly procSysDir?: string | undefined;
  /** See RouteManagerOptions: where the EIPs that arrived on the node are recorded. */
  readonly arrivals?: ArpArrivals;
}

export function kernelSubsystems(options: KernelSubsystemsOptions): Subsystem[] {
  const { runner } = options;
  // The one writer of kernel settings: through --proc-sys when it is given.
  const sysctl = new SysctlWriter(runner, { procSysDir: options.procSysDir });
  const route = new RouteManager(runner, {
    table: ROUTE_TABLE_ID,
    priority: RULE_PRIORITY,
    protocol: ARP_ROUTE_PROTOCOL,
    gatewayDev: options.gatewayDev,
    eipCidr: options.eipCidr,
    ...(options.arrivals === undefined ? {} : { arrivals: options.arrivals }),
    sysctl,
  });
  const iptables = new IptablesManager(runner, { mode: options.iptablesMode });
  const nftables = new NftablesManager(runner);
  const nftOwns = "table ip kube_eip";
  const nat =
    options.dataplane === "nftables"
      ? [
          managed(
            "nftables",
            nftOwns,
            nftables,
            (d) => ({
              bindings: d.bound,
              internalNets: d.internalNets,
              counters: d.trafficCounters,
            }),
            nftablesMissing,
          ),
          managed(
            "iptables",
            "one FORWARD rule accepting what our table marked",
            iptables,
            (d) => ({
              chains: [],
              jumps: [NFT_FORWARD_JUMP],
              // Every jump of the iptables dataplane (counting and hairpin included) goes.
              retiredJumps: [...d.jumps, ...d.retiredJumps],
            }),
            iptablesMissing,
          ),
          leftoversSubsystem(new IptablesLeftovers(runner, options.iptablesMode)),
        ]
      : [
          managed(
            "iptables",
            "the members of our sets, our chains and the jumps into them",
            new IptablesDataplane(new IpsetManager(runner), iptables),
            (d) => ({ ipsets: d.ipsets, iptables: iptablesDesired(d) }),
            iptablesDataplaneMissing,
          ),
        ];
  // The nftables dataplane's state goes once the iptables one (our sets' members included)
  // accepts and NATs: its FORWARD accept of what our table marked, then the table.
  const last =
    options.dataplane === "nftables"
      ? []
      : [
          managed(
            "iptables",
            "nothing: deletes the FORWARD rule of --dataplane nftables",
            new IptablesManager(runner, { mode: options.iptablesMode }),
            () => NFT_LEFTOVER,
          ),
          managed("nftables", `nothing: deletes ${nftOwns}`, nftables, () => NO_NAT),
        ];
  return [
    ...nat,
    {
      ...managed(
        "iproute",
        "table 1001, our rules, EIP addresses, proxy ARP entries",
        route,
        routeDesired,
        (snapshot, desired) => routeMissing(snapshot, desired, options.gatewayDev),
      ),
      gate: true,
    },
    managed(
      "sysctl",
      "the gateway device's ARP settings",
      new SysctlManager(sysctl),
      (d) => d.sysctls,
      sysctlMissing,
    ),
    ...last,
  ];
}

const NO_NAT = { bindings: [], internalNets: [] };
const NFT_LEFTOVER: IptablesDesired = { chains: [], jumps: [], retiredJumps: [NFT_FORWARD_JUMP] };

function iptablesDesired(d: DesiredState): IptablesDesired {
  return { chains: d.chains, jumps: d.jumps, retiredJumps: d.retiredJumps };
}
