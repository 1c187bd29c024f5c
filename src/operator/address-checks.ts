// What an EipBinding's EIP may be, as the operator can tell before any agent call: not a
// special address (loopback, link-local, multicast, unspecified, limited broadcast), not any
// Node's InternalIP or ExternalIP (binding it would take that node's address over on the
// public segment) and not the VMI's own address. Checked at every reconcile, so a Node that
// gains the address later unbinds the EIP.
import { canonicalIpv4, parseIpv4 } from "../common/ipv4.js";
import { specialOf } from "../common/special-addresses.js";
import type { KubeNode } from "./types.js";

/** The node holding the address as its InternalIP or ExternalIP, and which one. */
export function nodeHolding(
  address: string,
  nodes: Iterable<KubeNode>,
): { node: string; type: string } | undefined {
  for (const n of nodes) {
    for (const a of n.status?.addresses ?? []) {
      if (
        (a.type === "InternalIP" || a.type === "ExternalIP") &&
        canonicalIpv4(a.address) === address
      ) {
        return { node: n.metadata.name, type: a.type };
      }
    }
  }
  return undefined;
}

/** Why the EIP (canonical) must not be bound, or undefined when it may. */
export function eipProblem(
  eip: string,
  nodes: Iterable<KubeNode>,
  vmiAddress?: string,
): string | undefined {
  const value = parseIpv4(eip);
  if (value === undefined) return `EIP ${JSON.stringify(eip.slice(0, 64))} is not an IPv4 address`;
  const special = specialOf(value);
  if (special) return `EIP ${eip} is ${special}`;
  const held = nodeHolding(eip, nodes);
  if (held) return `EIP ${eip} is node ${held.node}'s ${held.type}`;
  if (vmiAddress === eip) return `EIP ${eip} is the VMI's own address`;
  return undefined;
}
