// The pure heart of the agent: (config, bindings) -> the kernel state the node must have.
// No I/O and no clock: the kernel managers diff this against what the kernel holds. (The
// rule strings of a binding are cached per binding object, invisibly: see rulesOf.)
//
// The names here are the seed's (COMPATIBILITY.md), so a node upgraded from the seed
// already carries most of this state and nothing needs to be rewritten. Where we differ:
// - internal nets in eip_route are `throw` routes: a bound VMI's traffic to pods and
//   services falls through to the node's own routing, exactly as if no EIP were bound
//   (the seed sent it all to cni0, which is wrong for pods on other nodes);
// - the EIP sits on the gateway device as a /32, so each EIP is its own primary address
//   and removing one never takes secondaries with it (the seed used the EIP network's
//   prefix; those addresses are adopted and replaced without a gap);
// - FORWARD accepts only EIP traffic, so that a bound VMI's traffic inside the cluster still
//   meets the CNI's policy chains after ours: the seed's ACCEPT at the top of FORWARD for
//   sources in kube-eip-vmi now also needs a destination outside k8s_internal_net (the VMI
//   to the outside: what SNAT carries, and the answers to the outside's connections to its
//   EIP), and KUBE-EIP-FORWARD, jumped to for a VMI destination and a source outside
//   k8s_internal_net, accepts exactly the packets that reach a VMI because of its EIP (DNAT
//   from that EIP) and the replies to connections it opened. The seed's unconditional
//   ACCEPT, and our earlier unconditional jump, are RETIRED_JUMPS: removed where found;
// - with --arp-poisoning the kernel answers ARP for the bound EIPs (proxy neighbour entries,
//   see ArpProxySpec), so the answers outlive the agent process; the seed answered from
//   the agent process, and nothing answered while it was down;
// - hairpin (docs/traffic.md): a caller inside the cluster that reaches a VMI through its
//   EIP is MASQUERADEd to the node (KUBE-EIP-HAIRPIN), so the VMI answers through the node
//   and the answer comes from the EIP, as it does for a caller outside;
// - with trafficCounters, the kernel counts each EIP's traffic on its member (in) and its
//   VMI's member (out) of SET_TRAFFIC (an ipset with counters): one rule at the top of
//   mangle PREROUTING, and KUBE-EIP-TX from mangle POSTROUTING.

import {
  type Binding,
  CHAIN_FORWARD,
  CHAIN_HAIRPIN,
  CHAIN_POSTROUTING,
  CHAIN_PREROUTING,
  type DesiredState,
  FORWARD_MARK,
  type JumpSpec,
  type RouteSpec,
  SET_EIP,
  SET_INTERNAL,
  SET_TRAFFIC,
  SET_VMI,
  type SysctlSpec,
  CHAIN_TX,
  type ChainSpec,
} from "./desired.js";

export interface PlanConfig {
  /** Canonical CIDRs ("10.244.0.0/16") never NATed. */
  readonly internalNets: readonly string[];
  readonly gatewayIp: string;
  readonly gatewayDev: string;
  /** Canonical CIDR of the EIP network. */
  readonly eipCidr: string;
  /** When set, EIPs are not put on the gateway device: the node answers ARP for them. */
  readonly arpPoisoning: boolean;
  /** The CNI bridge the VMIs are plugged into. */
  readonly cniDev: string;
  /** Per-EIP traffic counters in the kernel (docs/traffic.md); off when absent. */
  readonly trafficCounters?: boolean;
}

export function dnatRule(b: Binding): string {
  return `-d ${b.eip}/32 -j DNAT --to-destination ${b.vmi}`;
}

export function snatRule(b: Binding): string {
  return `-s ${b.vmi}/32 -m set ! --match-set ${SET_INTERNAL} dst -j SNAT --to-source ${b.eip}`;
}

export function forwardRule(b: Binding): string {
  return `-d ${b.vmi}/32 -m conntrack --ctstate DNAT --ctorigdst ${b.eip} -j ACCEPT`;
}

/**
 * A packet conntrack finds INVALID is not NATed: one for an EIP would be delivered to the
 * node itself, which holds the EIP's address, and the node would reset the connection.
 * That happens on a move, while the new node sends a flow's packets and the old one still
 * receives its ACKs, which acknowledge data it never saw (kube-proxy drops INVALID packets
 * for the same reason, kubernetes#74839). Dropped, the sender sends again.
 */
export const INVALID_JUMP: JumpSpec = {
  table: "filter",
  chain: "INPUT",
  rule: `-m set --match-set ${SET_EIP} dst -m conntrack --ctstate INVALID -m comment --comment "kube-eip: INVALID packets to an EIP" -j DROP`,
};

export const JUMPS: readonly JumpSpec[] = [
  {
    table: "nat",
    chain: "PREROUTING",
    rule: `-m set --match-set ${SET_EIP} dst -j ${CHAIN_PREROUTING}`,
  },
  {
    table: "nat",
    chain: "POSTROUTING",
    rule: `-m set --match-set ${SET_VMI} src -j ${CHAIN_POSTROUTING}`,
  },
  {
    table: "filter",
    chain: "FORWARD",
    rule: `-m set --match-set ${SET_VMI} src -m set ! --match-set ${SET_INTERNAL} dst -j ACCEPT`,
  },
  {
    table: "filter",
    chain: "FORWARD",
    rule: `-m set --match-set ${SET_VMI} dst -m set ! --match-set ${SET_INTERNAL} src -j ${CHAIN_FORWARD}`,
  },
  INVALID_JUMP,
];

/**
 * Hairpin: a connection DNATed from an EIP whose caller is inside the cluster (a pod, another
 * VMI, the VMI itself) goes to KUBE-EIP-HAIRPIN, which MASQUERADEs it to the node when the
 * address it was DNATed from is in the EIP network. Without it the VMI would answer the
 * caller directly, from its own address, and the caller would drop the answer (or, for the
 * VMI itself, never see it). Traffic to a VMI's own address is not DNATed and never goes there.
 */
export const HAIRPIN_JUMP: JumpSpec = {
  table: "nat",
  chain: "POSTROUTING",
  rule: `-m set --match-set ${SET_VMI} dst -m set --match-set ${SET_INTERNAL} src -m conntrack --ctstate DNAT -j ${CHAIN_HAIRPIN}`,
};

export function hairpinRule(eipCidr: string): string {
  return `-m conntrack --ctorigdst ${eipCidr} -j MASQUERADE`;
}

/**
 * Counting (trafficCounters): every packet to an EIP counts on the EIP's member of
 * SET_TRAFFIC (before the DNAT, in mangle PREROUTING); what a VMI sends as from its EIP
 * counts on the VMI's member, in KUBE-EIP-TX (after the routing decision and the forward
 * accepts, before the SNAT: see txRules). A rule without a target only counts.
 */
export const COUNT_JUMPS: readonly JumpSpec[] = [
  {
    table: "mangle",
    chain: "PREROUTING",
    rule: `-m set --match-set ${SET_EIP} dst -m set --match-set ${SET_TRAFFIC} dst -m comment --comment "kube-eip: count EIP traffic in"`,
  },
  {
    table: "mangle",
    chain: "POSTROUTING",
    rule: `-m set --match-set ${SET_VMI} src -j ${CHAIN_TX}`,
  },
];

/**
 * What a VMI sends that leaves as from its EIP: to the outside (SNAT, or the answers to the
 * outside's connections to the EIP), and the answers to hairpin callers (a connection
 * DNATed from the EIP network, reply direction). The counting match comes last: a set
 * match counts as soon as it matches, whatever the rest of the rule says.
 */
export function txRules(eipCidr: string): string[] {
  return [
    `-m set ! --match-set ${SET_INTERNAL} dst -m set --match-set ${SET_TRAFFIC} src -j RETURN`,
    `-m conntrack --ctstate DNAT --ctorigdst ${eipCidr} --ctdir REPLY -m set --match-set ${SET_TRAFFIC} src`,
  ];
}

/**
 * Rules that the seed, or an earlier version of ours, kept in FORWARD and that let a bound
 * VMI's traffic inside the cluster skip the CNI's policy: deleted wherever found. Provably
 * ours: they name our set and our chain, and nothing else writes them.
 */
export const RETIRED_JUMPS: readonly JumpSpec[] = [
  { table: "filter", chain: "FORWARD", rule: `-m set --match-set ${SET_VMI} src -j ACCEPT` },
  {
    table: "filter",
    chain: "FORWARD",
    rule: `-m set --match-set ${SET_VMI} dst -j ${CHAIN_FORWARD}`,
  },
];

/**
 * --dataplane nftables: the one rule of ours in iptables. An accept in our nftables forward
 * chain ends only that chain; a DROP policy of iptables' FORWARD (a base chain of its own, or
 * the legacy hook) still drops the packet. This rule accepts, at the top of FORWARD, exactly
 * the packets our chain marked as EIP traffic (the marking rules mirror JUMPS' accepts).
 */
export const NFT_FORWARD_JUMP: JumpSpec = {
  table: "filter",
  chain: "FORWARD",
  rule: `-m mark --mark 0x${FORWARD_MARK.toString(16)}/0x${FORWARD_MARK.toString(16)} -m comment --comment "kube-eip: EIP traffic our nftables table accepted" -j ACCEPT`,
};

/** Replies to connections a bound VMI opened to the outside (they passed the src ACCEPT). */
export const FORWARD_REPLY_RULE = "-m conntrack --ctdir REPLY -j ACCEPT";

/** A binding's rules, with the addresses they were made from. */
interface BindingRules {
  readonly eip: string;
  readonly vmi: string;
  readonly dnat: string;
  readonly snat: string;
  readonly forward: string;
}

const rulesCache = new WeakMap<Binding, BindingRules>();

/**
 * The rules of a binding, made once per binding object: the managers compare the desired
 * rules with what they hold by map lookups, which are several times cheaper for the same
 * string object (already flat, hash cached) than for an equal string built anew each apply.
 * Invisible in the result: the strings are the same as dnatRule(b), snatRule(b) and
 * forwardRule(b).
 */
function rulesOf(b: Binding): BindingRules {
  const cached = rulesCache.get(b);
  if (cached !== undefined && cached.eip === b.eip && cached.vmi === b.vmi) return cached;
  const rules = {
    eip: b.eip,
    vmi: b.vmi,
    dnat: dnatRule(b),
    snat: snatRule(b),
    forward: forwardRule(b),
  };
  rulesCache.set(b, rules);
  return rules;
}

function byAddress(a: Binding, b: Binding): number {
  return a.eip < b.eip ? -1 : a.eip > b.eip ? 1 : 0;
}

/**
 * The gateway device answers ARP only for addresses it holds itself and for its proxy
 * entries (arp_ignore 1): by default Linux answers on any device for any of the node's
 * addresses, which would tell the public segment about the node's pod and management
 * addresses. With --arp-poisoning, proxy answers to broadcast requests go out at once
 * (proxy_delay 0) instead of after a random delay of up to 0.8 s.
 */
export function gatewaySysctls(config: PlanConfig): SysctlSpec[] {
  const dev = config.gatewayDev;
  const sysctls = [{ key: `net/ipv4/conf/${dev}/arp_ignore`, value: "1" }];
  if (config.arpPoisoning) sysctls.push({ key: `net/ipv4/neigh/${dev}/proxy_delay`, value: "0" });
  return sysctls;
}

/**
 * The whole desired kernel state. Bindings are sorted first, so the result depends only on
 * the set of bindings, never on the order they arrived in.
 */
export function plan(config: PlanConfig, bindings: Iterable<Binding>): DesiredState {
  const sorted = [...bindings].sort(byAddress);
  const eips = sorted.map((b) => b.eip);
  const vmis = sorted.map((b) => b.vmi);
  const rules = sorted.map(rulesOf);
  const internalNets = [...config.internalNets].sort();
  const counting = config.trafficCounters === true;
  // Off: the set and KUBE-EIP-TX stay, empty, and the jumps go (nothing counts).
  const counted = counting ? [...eips, ...vmis] : [];
  const countChains: ChainSpec[] = counting
    ? [{ table: "mangle", name: CHAIN_TX, rules: txRules(config.eipCidr) }]
    : [{ table: "mangle", name: CHAIN_TX, rules: [] }];
  return {
    internalNets,
    ipsets: [
      { name: SET_INTERNAL, type: "hash:net", members: internalNets },
      { name: SET_EIP, type: "hash:ip", members: eips },
      { name: SET_VMI, type: "hash:ip", members: [...vmis].sort() },
      { name: SET_TRAFFIC, type: "hash:ip", counters: true, members: counted },
    ],
    chains: [
      { table: "nat", name: CHAIN_PREROUTING, rules: rules.map((r) => r.dnat) },
      { table: "nat", name: CHAIN_POSTROUTING, rules: rules.map((r) => r.snat) },
      {
        table: "filter",
        name: CHAIN_FORWARD,
        rules: [FORWARD_REPLY_RULE, ...rules.map((r) => r.forward)],
      },
      { table: "nat", name: CHAIN_HAIRPIN, rules: [hairpinRule(config.eipCidr)] },
      ...countChains,
    ],
    jumps: counting ? [...JUMPS, HAIRPIN_JUMP, ...COUNT_JUMPS] : [...JUMPS, HAIRPIN_JUMP],
    retiredJumps: counting ? RETIRED_JUMPS : [...RETIRED_JUMPS, ...COUNT_JUMPS],
    routes: [
      { kind: "link", dst: config.eipCidr, dev: config.gatewayDev },
      { kind: "via", dst: "default", gateway: config.gatewayIp, dev: config.gatewayDev },
      ...internalNets.map((dst): RouteSpec => ({ kind: "throw", dst })),
    ],
    ruleSources: [...vmis].sort(),
    gatewayAddresses: config.arpPoisoning ? [] : eips,
    announced: eips,
    bound: sorted,
    arpProxy: config.arpPoisoning ? { eips, routeDev: config.cniDev } : undefined,
    sysctls: gatewaySysctls(config),
    trafficCounters: counting,
  };
}

/**
 * `desired` with the node answering ARP only for the EIPs of `held` (its addresses on the
 * gateway device, its proxy entries): the gates an apply writes before the NAT of what
 * comes (src/agent/dataplane.ts). Returns `desired` itself when that changes nothing.
 */
export function answeringOnly(desired: DesiredState, held: ReadonlySet<string>): DesiredState {
  const answered = desired.arpProxy?.eips ?? desired.gatewayAddresses;
  if (answered.every((eip) => held.has(eip))) return desired;
  const only = (eips: readonly string[]) => eips.filter((eip) => held.has(eip));
  return {
    ...desired,
    gatewayAddresses: only(desired.gatewayAddresses),
    arpProxy: desired.arpProxy && { ...desired.arpProxy, eips: only(desired.arpProxy.eips) },
  };
}
