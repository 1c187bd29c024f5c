// The desired-state model: what the planner (plan.ts) produces and the kernel managers
// (src/kernel) hold the node to, as plain data, with the names of the things we own. A leaf
// module: it imports nothing, so the agent and the kernel both import it and neither imports
// the other back. The names are the seed's (COMPATIBILITY.md).

export const SET_INTERNAL = "k8s_internal_net";
export const SET_EIP = "kube-eip-eip";
export const SET_VMI = "kube-eip-vmi";
export const CHAIN_PREROUTING = "KUBE-EIP-PREROUTING";
export const CHAIN_POSTROUTING = "KUBE-EIP-POSTROUTING";
export const CHAIN_FORWARD = "KUBE-EIP-FORWARD";
/** Per-EIP traffic counters (docs/traffic.md): the kernel counts each member's packets. */
export const SET_TRAFFIC = "kube-eip-traffic";
/** nat: MASQUERADE of in-cluster callers of an EIP, so the replies come back through us. */
export const CHAIN_HAIRPIN = "KUBE-EIP-HAIRPIN";
/** mangle: counts what a VMI sends as from its EIP (on the VMI's member of SET_TRAFFIC). */
export const CHAIN_TX = "KUBE-EIP-TX";
export const ROUTE_TABLE_ID = 1001;
export const ROUTE_TABLE_NAME = "eip_route";
export const RULE_PRIORITY = 1001;
/** --dataplane nftables: the one table we own, in each address family we write. */
export const NFT_TABLE = "kube_eip";
/**
 * The packet mark bit our nftables forward chain sets on the EIP traffic it accepts, for the
 * one iptables rule that accepts it past a FORWARD policy DROP (see nftables-table.ts).
 */
export const FORWARD_MARK = 0x100000;
/** Route protocol (`proto 225`) that marks the main table's EIP host routes of --arp-poisoning. */
export const ARP_ROUTE_PROTOCOL = 225;

/** A validated binding: both addresses in canonical dotted-quad form. */
export interface Binding {
  readonly eip: string;
  readonly vmi: string;
}

export interface IpsetSpec {
  readonly name: string;
  readonly type: "hash:ip" | "hash:net";
  /** Created with the `counters` option: the kernel counts the packets each member matches. */
  readonly counters?: boolean;
  /** hash:ip members are addresses ("10.0.0.1"); hash:net members are CIDRs ("10.0.0.0/8"). */
  readonly members: readonly string[];
}

export type IptablesTable = "nat" | "filter" | "mangle";

/** A chain we own entirely: its rules are exactly these, in this order. */
export interface ChainSpec {
  readonly table: IptablesTable;
  readonly name: string;
  /** Rule specs as iptables-save prints them, without the leading "-A CHAIN". */
  readonly rules: readonly string[];
}

/** One rule we keep at the top of a chain we do not own (a built-in chain). */
export interface JumpSpec {
  readonly table: IptablesTable;
  readonly chain: string;
  /** As iptables-save prints it, without the leading "-A CHAIN". */
  readonly rule: string;
}

export type RouteSpec =
  | { readonly kind: "via"; readonly dst: string; readonly gateway: string; readonly dev: string }
  | { readonly kind: "link"; readonly dst: string; readonly dev: string }
  | { readonly kind: "throw"; readonly dst: string };

/**
 * --arp-poisoning: the node answers ARP for these EIPs on the gateway device without holding
 * them. The kernel answers (a proxy neighbour entry per EIP on the gateway device), so the
 * answers go on while the agent is down. Its proxy ARP answers only for an address whose
 * route leaves through another device than the one the request came in on, so each EIP
 * also gets a host route in the main table through `routeDev`: the CNI bridge, where the
 * VMI behind the EIP is (inbound traffic is DNATed before routing and never uses it).
 */
export interface ArpProxySpec {
  readonly eips: readonly string[];
  readonly routeDev: string;
}

/** A kernel setting held at a value: `key` in sysctl's slash form (device names may have dots). */
export interface SysctlSpec {
  readonly key: string;
  readonly value: string;
}

export interface DesiredState {
  readonly ipsets: readonly IpsetSpec[];
  readonly chains: readonly ChainSpec[];
  readonly jumps: readonly JumpSpec[];
  /** Rules of ours from earlier versions, deleted from the chains we do not own. */
  readonly retiredJumps: readonly JumpSpec[];
  /** The canonical CIDRs never NATed (the members of SET_INTERNAL). */
  readonly internalNets: readonly string[];
  /** Routes of table ROUTE_TABLE_ID; dst "default" or a canonical CIDR. */
  readonly routes: readonly RouteSpec[];
  /** VMI addresses that get `from <vmi> lookup eip_route priority 1001`. */
  readonly ruleSources: readonly string[];
  /** Addresses (without prefix) to hold as /32 on the gateway device. */
  readonly gatewayAddresses: readonly string[];
  /** EIPs (without prefix) to announce by BGP, when it is on. */
  readonly announced: readonly string[];
  /** Every binding, EIP and VMI: whose connection tracking to forget when it goes. */
  readonly bound: readonly Binding[];
  /** With --arp-poisoning, the EIPs answered by proxy ARP; undefined otherwise. */
  readonly arpProxy: ArpProxySpec | undefined;
  /** Settings of the gateway device that decide what it answers ARP for. */
  readonly sysctls: readonly SysctlSpec[];
  /** Whether the kernel counts each EIP's traffic (docs/traffic.md). */
  readonly trafficCounters: boolean;
}
