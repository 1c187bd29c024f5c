// The one builder of the kernel's subsystems, in their order: the agent (agent.ts) runs them
// in its apply loop, the benchmark (bench/agent-bench.ts) times them one by one, so both
// write the kernel the same way. Sets come first: the rules of iptables name them.
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
import type { CommandRunner } from "./runner.js";
import { type Subsystem, managed } from "./subsystem.js";
import { SysctlManager, SysctlWriter } from "./sysctl.js";

export interface KernelSubsystemsOptions {
  readonly runner: CommandRunner;
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
  return [
    managed("ipset", "the members of our sets", new IpsetManager(runner), (d) => d.ipsets),
    managed(
      "iptables",
      "our chains and the jumps into them",
      new IptablesManager(runner, { mode: options.iptablesMode }),
      iptablesDesired,
    ),
    managed(
      "iproute",
      "table 1001, our rules, EIP addresses, proxy ARP entries",
      route,
      routeDesired,
    ),
    managed(
      "sysctl",
      "the gateway device's ARP settings",
      new SysctlManager(sysctl),
      (d) => d.sysctls,
    ),
  ];
}

function iptablesDesired(d: DesiredState): IptablesDesired {
  return { chains: d.chains, jumps: d.jumps, retiredJumps: d.retiredJumps };
}
