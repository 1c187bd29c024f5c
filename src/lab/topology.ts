// The lab's addressing and naming, and the pure plan of `ip -batch` lines, sysctls and
// iptables-restore input that builds it. No I/O here: lab.ts runs what this returns, and the
// unit tests read it.

import {
  formatIpv4,
  formatIpv4Net,
  parseIpv4,
  parseIpv4Net,
  type Ipv4Net,
} from "../common/ipv4.js";

export type IptablesMode = "legacy" | "nft";

/** The addressing of a lab. Every field is an address or CIDR in canonical form. */
export interface LabTopology {
  /** The public L2 segment (bridge br-pub) where EIPs live. */
  readonly publicNet: string;
  /** The EIP gateway: the router's address on the public segment. */
  readonly routerPublic: string;
  /** The management network (bridge br-mgmt) holding the nodes' own addresses. */
  readonly mgmtNet: string;
  /** The router's address on the management network: the nodes' default gateway. */
  readonly routerMgmt: string;
  /** Node i's management address is the mgmtNet base address plus this plus i. */
  readonly nodeMgmtOffset: number;
  /** The link between the router and the outside host. */
  readonly extNet: string;
  readonly routerExt: string;
  /** The outside host's address. */
  readonly outside: string;
  /** The cluster's pod network; node i owns the i-th /24 in it, cni0 holds its .1. */
  readonly podNet: string;
  /** Host part of the pod's address in its node's /24 (the seed's 10.244.2.50). */
  readonly podHost: number;
  /** The kube-proxy-like service address, DNATed on every node to the pod. */
  readonly serviceAddress: string;
  /** Automatically assigned VMI addresses start at this host part of the node's /24. */
  readonly firstVmiHost: number;
}

/** The seed's addressing: the default of every lab. */
export const SEED_TOPOLOGY: LabTopology = {
  publicNet: "192.168.18.0/24",
  routerPublic: "192.168.18.1",
  mgmtNet: "172.16.0.0/16",
  routerMgmt: "172.16.0.1",
  nodeMgmtOffset: 10,
  extNet: "198.51.100.0/24",
  routerExt: "198.51.100.1",
  outside: "198.51.100.10",
  podNet: "10.244.0.0/16",
  podHost: 50,
  serviceAddress: "192.168.223.10",
  firstVmiHost: 10,
};

/** Device names inside the namespaces. */
export const DEVICES = {
  publicBridge: "br-pub",
  mgmtBridge: "br-mgmt",
  routerPublic: "pub0",
  routerMgmt: "mgmt0",
  routerExt: "ext0",
  nodeMgmt: "eth0",
  /** The node's gateway device: on the public segment, no address of its own. */
  nodeGateway: "eth1",
  nodeBridge: "cni0",
  /** A pod's, a VMI's and the outside host's only interface. */
  guest: "eth0",
  podHostSide: "vpod",
} as const;

/** Chain of the node's filter table accepting cluster-internal pod traffic, as a CNI would. */
export const CNI_FORWARD_CHAIN = "LAB-CNI-FORWARD";
/** The node's kube-proxy-like nat chain. */
export const SERVICES_CHAIN = "KUBE-SERVICES";

const PREFIX_RE = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
const VMI_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;
export const MAX_NODES = 200;

export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) {
    throw new Error(
      `invalid lab prefix ${JSON.stringify(prefix)}: lowercase letters, digits and "-", 2 to 32 characters, starting with a letter`,
    );
  }
  return prefix;
}

export function checkVmiName(name: string): string {
  if (!VMI_NAME_RE.test(name)) {
    throw new Error(
      `invalid VMI name ${JSON.stringify(name)}: lowercase letters, digits and "-", at most 40 characters`,
    );
  }
  return name;
}

export interface LabNames {
  readonly switch: string;
  readonly router: string;
  readonly outside: string;
  node(i: number): string;
  pod(node: number): string;
  vmi(name: string): string;
}

/** Namespace names of a lab. */
export function namespaceNames(prefix: string): LabNames {
  return {
    switch: `${prefix}-sw`,
    router: `${prefix}-router`,
    outside: `${prefix}-ext`,
    node: (i: number) => `${prefix}-node${i}`,
    pod: (node: number) => `${prefix}-pod${node}`,
    vmi: (name: string) => `${prefix}-vmi-${name}`,
  };
}

/** The node that holds the pod: node 2 (the seed's), or node 1 in a one-node lab. */
export function podNodeIndex(nodes: number): number {
  return nodes >= 2 ? 2 : 1;
}

/** Name of a VMI's veth end in the node namespace (at most 15 characters). */
export function vmiHostVeth(name: string): string {
  if (name.length <= 14) return `v${name}`;
  // FNV-1a: short, stable, no crypto needed for a device name.
  let hash = 0x811c9dc5;
  for (const ch of name) {
    hash ^= ch.charCodeAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return `v${name.slice(0, 5)}-${hash.toString(16).padStart(8, "0")}`;
}

function hex2(n: number): string {
  return (n & 255).toString(16).padStart(2, "0");
}

/** Locally administered, deterministic MAC addresses, so captures and ARP tests can predict them. */
export const MACS = {
  routerPublic: "02:ee:00:00:00:01",
  routerMgmt: "02:ee:00:00:00:02",
  routerExt: "02:ee:00:00:00:03",
  outside: "02:ee:00:00:00:04",
  nodeGateway: (i: number) => `02:ee:01:00:00:${hex2(i)}`,
  nodeBridge: (i: number) => `02:ee:02:00:00:${hex2(i)}`,
  nodeMgmt: (i: number) => `02:ee:05:00:00:${hex2(i)}`,
  pod: (node: number) => `02:ee:04:00:00:${hex2(node)}`,
  vmi: (serial: number) => `02:ee:03:00:${hex2(serial >> 8)}:${hex2(serial)}`,
  /** A VMI's host end once it came back to its home node's cni0 (migrateVmi). */
  vmiHost: (serial: number) => `02:ee:07:00:${hex2(serial >> 8)}:${hex2(serial)}`,
};

function net(text: string, what: string): Ipv4Net {
  const parsed = parseIpv4Net(text);
  if (!parsed) throw new Error(`topology: ${what} ${JSON.stringify(text)} is not a CIDR`);
  return parsed;
}

function addr(text: string, what: string): number {
  const parsed = parseIpv4(text);
  if (parsed === undefined) {
    throw new Error(`topology: ${what} ${JSON.stringify(text)} is not an IPv4 address`);
  }
  return parsed;
}

/** Addresses derived from a topology. Node indexes start at 1. */
export class Addressing {
  readonly publicNet: Ipv4Net;
  readonly mgmtNet: Ipv4Net;
  readonly extNet: Ipv4Net;
  readonly podNet: Ipv4Net;

  constructor(readonly topology: LabTopology) {
    this.publicNet = net(topology.publicNet, "publicNet");
    this.mgmtNet = net(topology.mgmtNet, "mgmtNet");
    this.extNet = net(topology.extNet, "extNet");
    this.podNet = net(topology.podNet, "podNet");
    addr(topology.routerPublic, "routerPublic");
    addr(topology.routerMgmt, "routerMgmt");
    addr(topology.routerExt, "routerExt");
    addr(topology.outside, "outside");
    addr(topology.serviceAddress, "serviceAddress");
    if (this.podNet.prefix > 23) throw new Error("topology: podNet must be a /23 or larger");
  }

  /** Largest node count this addressing allows. */
  maxNodes(): number {
    const podSlots = 2 ** (24 - this.podNet.prefix) - 1;
    const mgmtSlots = 2 ** (32 - this.mgmtNet.prefix) - 2 - this.topology.nodeMgmtOffset;
    return Math.min(MAX_NODES, podSlots, mgmtSlots);
  }

  cidr(address: string, network: Ipv4Net): string {
    return `${address}/${network.prefix}`;
  }

  nodeMgmt(i: number): string {
    return formatIpv4(this.mgmtNet.base + this.topology.nodeMgmtOffset + i);
  }

  podCidr(i: number): string {
    return formatIpv4Net({ base: this.podNet.base + i * 256, prefix: 24 });
  }

  /** Address in node i's pod /24 with the given host part (1 is cni0). */
  podAddress(i: number, host: number): string {
    return formatIpv4(this.podNet.base + i * 256 + host);
  }

  nodeBridge(i: number): string {
    return this.podAddress(i, 1);
  }

  /** Node index owning a pod-network address, or undefined. */
  nodeOfPodAddress(address: string, nodes: number): number | undefined {
    const value = parseIpv4(address);
    if (value === undefined) return undefined;
    for (let i = 1; i <= nodes; i++) {
      const base = this.podNet.base + i * 256;
      if (value >= base && value < base + 256) return i;
    }
    return undefined;
  }
}

/** What it takes to build a lab's infrastructure (everything but VMIs). */
export interface BuildPlan {
  /** Namespaces to create, in one `ip -batch`. */
  readonly namespaces: readonly string[];
  /** `sysctl -w` arguments per namespace, applied before any link exists. */
  readonly sysctls: ReadonlyMap<string, readonly string[]>;
  /** iptables-restore input per node namespace. */
  readonly iptables: readonly {
    readonly ns: string;
    readonly mode: IptablesMode;
    readonly input: string;
  }[];
  /** Phases of `ip -n NS -batch -`, each phase's batches run in parallel. */
  readonly phases: readonly (readonly {
    readonly ns: string;
    readonly lines: readonly string[];
  }[])[];
}

export interface BuildSpec {
  readonly prefix: string;
  readonly nodes: number;
  readonly iptablesModes: readonly IptablesMode[];
  readonly topology: LabTopology;
}

/** Sysctls every lab namespace gets: no IPv6 on new links (quiet L2 segments; lo keeps ::1). */
const BASE_SYSCTLS = ["net.ipv6.conf.default.disable_ipv6=1"];

export function nodeIptablesInput(a: Addressing, podAddress: string): string {
  return [
    "*nat",
    `:${SERVICES_CHAIN} - [0:0]`,
    `-A PREROUTING -j ${SERVICES_CHAIN}`,
    `-A OUTPUT -j ${SERVICES_CHAIN}`,
    `-A ${SERVICES_CHAIN} -d ${a.topology.serviceAddress}/32 -j DNAT --to-destination ${podAddress}`,
    "COMMIT",
    "*filter",
    ":FORWARD DROP [0:0]",
    `:${CNI_FORWARD_CHAIN} - [0:0]`,
    `-A FORWARD -j ${CNI_FORWARD_CHAIN}`,
    // Pod <-> pod, and node network <-> pods (a node's own traffic to remote pods and to
    // services comes from its management address). Pods <-> anything else stays dropped:
    // that is the EIP agent's business.
    `-A ${CNI_FORWARD_CHAIN} -s ${a.topology.podNet} -d ${a.topology.podNet} -j ACCEPT`,
    `-A ${CNI_FORWARD_CHAIN} -s ${a.topology.mgmtNet} -d ${a.topology.podNet} -j ACCEPT`,
    `-A ${CNI_FORWARD_CHAIN} -s ${a.topology.podNet} -d ${a.topology.mgmtNet} -j ACCEPT`,
    "COMMIT",
    "",
  ].join("\n");
}

export function buildPlan(spec: BuildSpec): BuildPlan {
  const a = new Addressing(spec.topology);
  const t = spec.topology;
  const n = namespaceNames(spec.prefix);
  const D = DEVICES;
  const nodes = Array.from({ length: spec.nodes }, (_, k) => k + 1);
  const podNode = podNodeIndex(spec.nodes);
  const podAddress = a.podAddress(podNode, t.podHost);

  const namespaces = [n.switch, n.router, n.outside, ...nodes.map(n.node), n.pod(podNode)];

  const sysctls = new Map<string, readonly string[]>();
  sysctls.set(n.switch, [
    ...BASE_SYSCTLS,
    // A plain switch: bridged frames do not pass through the switch's own netfilter.
    "net.bridge.bridge-nf-call-iptables=0",
    "net.bridge.bridge-nf-call-ip6tables=0",
    "net.bridge.bridge-nf-call-arptables=0",
  ]);
  sysctls.set(n.router, [
    ...BASE_SYSCTLS,
    "net.ipv4.ip_forward=1",
    // EIP routes learned by BGP point at the management network, while the VMIs' replies
    // come back over the public one: asymmetric, as on a real edge.
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
  ]);
  sysctls.set(n.outside, BASE_SYSCTLS);
  sysctls.set(n.pod(podNode), BASE_SYSCTLS);
  for (const i of nodes) {
    sysctls.set(n.node(i), [
      ...BASE_SYSCTLS,
      "net.ipv4.ip_forward=1",
      "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0",
    ]);
  }

  const iptables = nodes.map((i) => ({
    ns: n.node(i),
    mode: spec.iptablesModes[i - 1] ?? "nft",
    input: nodeIptablesInput(a, podAddress),
  }));

  const sw = [
    "link set lo up",
    `link add ${D.publicBridge} type bridge`,
    `link set ${D.publicBridge} up`,
    `link add ${D.mgmtBridge} type bridge`,
    `link set ${D.mgmtBridge} up`,
    `link add r-pub master ${D.publicBridge} up type veth peer name ${D.routerPublic} address ${MACS.routerPublic} netns ${n.router}`,
    `link add r-mgmt master ${D.mgmtBridge} up type veth peer name ${D.routerMgmt} address ${MACS.routerMgmt} netns ${n.router}`,
    ...nodes.flatMap((i) => [
      `link add n${i}-mgmt master ${D.mgmtBridge} up type veth peer name ${D.nodeMgmt} address ${MACS.nodeMgmt(i)} netns ${n.node(i)}`,
      `link add n${i}-pub master ${D.publicBridge} up type veth peer name ${D.nodeGateway} address ${MACS.nodeGateway(i)} netns ${n.node(i)}`,
    ]),
  ];

  const router = [
    "link set lo up",
    `addr add ${a.cidr(t.routerPublic, a.publicNet)} dev ${D.routerPublic}`,
    `addr add ${a.cidr(t.routerMgmt, a.mgmtNet)} dev ${D.routerMgmt}`,
    `link set ${D.routerPublic} up`,
    `link set ${D.routerMgmt} up`,
    `link add ${D.routerExt} address ${MACS.routerExt} type veth peer name ${D.guest} address ${MACS.outside} netns ${n.outside}`,
    `addr add ${a.cidr(t.routerExt, a.extNet)} dev ${D.routerExt}`,
    `link set ${D.routerExt} up`,
  ];

  const nodeBatches = nodes.map((i) => {
    const lines = [
      "link set lo up",
      `addr add ${a.cidr(a.nodeMgmt(i), a.mgmtNet)} dev ${D.nodeMgmt}`,
      `link set ${D.nodeMgmt} up`,
      `link set ${D.nodeGateway} up`,
      `link add ${D.nodeBridge} address ${MACS.nodeBridge(i)} type bridge`,
      `addr add ${a.nodeBridge(i)}/24 dev ${D.nodeBridge}`,
      `link set ${D.nodeBridge} up`,
      `route add default via ${t.routerMgmt} dev ${D.nodeMgmt}`,
      ...nodes
        .filter((j) => j !== i)
        .map((j) => `route add ${a.podCidr(j)} via ${a.nodeMgmt(j)} dev ${D.nodeMgmt}`),
    ];
    if (i === podNode) {
      lines.push(
        `link add ${D.podHostSide}${podNode} master ${D.nodeBridge} up type veth peer name ${D.guest} address ${MACS.pod(podNode)} netns ${n.pod(podNode)}`,
      );
    }
    return { ns: n.node(i), lines };
  });

  const outside = [
    "link set lo up",
    `addr add ${a.cidr(t.outside, a.extNet)} dev ${D.guest}`,
    `link set ${D.guest} up`,
    `route add default via ${t.routerExt} dev ${D.guest}`,
  ];

  const pod = guestLines(podAddress, a.nodeBridge(podNode));

  return {
    namespaces,
    sysctls,
    iptables,
    phases: [
      [{ ns: n.switch, lines: sw }],
      [{ ns: n.router, lines: router }, ...nodeBatches],
      [
        { ns: n.outside, lines: outside },
        { ns: n.pod(podNode), lines: pod },
      ],
    ],
  };
}

/** Configuration of a pod's or VMI's eth0 once it exists. */
export function guestLines(address: string, gateway: string): string[] {
  return [
    "link set lo up",
    // No IPv6 link-local address and so no IPv6 chatter (VMI namespaces get no sysctls).
    `link set ${DEVICES.guest} addrgenmode none`,
    `addr add ${address}/24 dev ${DEVICES.guest}`,
    `link set ${DEVICES.guest} up`,
    `route add default via ${gateway} dev ${DEVICES.guest}`,
  ];
}

/** The node-side `ip -batch` line that plugs a VMI into cni0. */
export function plugVmiLine(name: string, serial: number, vmiNs: string): string {
  return `link add ${vmiHostVeth(name)} master ${DEVICES.nodeBridge} up type veth peer name ${DEVICES.guest} address ${MACS.vmi(serial)} netns ${vmiNs}`;
}
