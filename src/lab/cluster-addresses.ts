// The addresses the lab's cluster gives its VMIs (lab-cluster.ts): from each node's pod /24,
// or from the spare pool (the pod network's /24s no node owns), never one taken by the node's
// bridge, the pod, a lab VMI or another of the cluster's VMIs.
import { formatIpv4, isIpv4, parseIpv4 } from "../common/ipv4.js";
import type { VmiRecord } from "./cluster-objects.js";
import type { Lab } from "./lab.js";

/** Addresses taken on the node: cni0, the pod, lab VMIs and this cluster's VMIs. */
function usedAddresses(lab: Lab, records: Iterable<VmiRecord>, node: number): Set<string> {
  const used = new Set([lab.node(node).bridgeAddress]);
  if (lab.podNode === node) used.add(lab.pod().address);
  // By address, not by where the VMI runs: one migrated keeping its address holds it away.
  const mine = (address: string) =>
    lab.addressing.nodeOfPodAddress(address, lab.nodeCount) === node;
  for (const v of lab.listVmis()) if (mine(v.address)) used.add(v.address);
  for (const rec of records) if (mine(rec.address)) used.add(rec.address);
  return used;
}

/** The requested address if it is the node's and free; else the next free from .10 (then .2). */
export function pickPodAddress(
  lab: Lab,
  records: Iterable<VmiRecord>,
  node: number,
  requested: string | undefined,
): string {
  const used = usedAddresses(lab, records, node);
  const a = lab.addressing;
  if (requested !== undefined) {
    const host = Number(requested.split(".")[3]);
    if (!isIpv4(requested) || a.nodeOfPodAddress(requested, lab.nodeCount) !== node) {
      throw new Error(`${requested} is not an address in node ${node}'s ${a.podCidr(node)}`);
    }
    if (host === 0 || host === 255 || used.has(requested)) {
      throw new Error(`${requested} is not free on node ${node}`);
    }
    return requested;
  }
  const first = lab.topology.firstVmiHost;
  const hosts = [
    ...Array.from({ length: 255 - first }, (_, k) => first + k),
    ...Array.from({ length: Math.max(0, first - 2) }, (_, k) => 2 + k),
  ];
  for (const host of hosts) {
    const address = a.podAddress(node, host);
    if (!used.has(address)) return address;
  }
  throw new Error(
    `no free address left in node ${node}'s ${a.podCidr(node)} (${used.size} taken): use more nodes`,
  );
}

/**
 * The requested address if it is in the spare pool and free; else the next free one. The
 * pool is the pod network after the last node's /24, host parts .1 to .254 of each /24.
 */
export function pickSpareAddress(
  lab: Lab,
  records: Iterable<VmiRecord>,
  requested: string | undefined,
): string {
  const used = new Set([...records].map((rec) => rec.address));
  const net = lab.addressing.podNet;
  const first = net.base + (lab.nodeCount + 1) * 256;
  const end = net.base + 2 ** (32 - net.prefix);
  const usable = (value: number) =>
    value >= first && value < end && value % 256 !== 0 && value % 256 !== 255;
  const range = `${formatIpv4(first)} to ${formatIpv4(end - 1)}`;
  if (requested !== undefined) {
    const value = parseIpv4(requested);
    if (value === undefined || !usable(value)) {
      throw new Error(`${requested} is not an address of the spare pool (${range})`);
    }
    if (used.has(requested)) throw new Error(`${requested} is not free`);
    return requested;
  }
  for (let value = first; value < end; value++) {
    const address = formatIpv4(value);
    if (usable(value) && !used.has(address)) return address;
  }
  throw new Error(`no free address left in the spare pool (${range})`);
}
