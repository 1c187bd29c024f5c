// Where each EipBinding's EIP must live: pure decisions from the caches, no I/O, no clock.
//
// - Ownership: when several EipBindings name one EIP, the oldest (creation time, then
//   namespace/name) owns it; the others are not applied. An owner being deleted keeps the
//   EIP until its object is gone (its finalizer is removed only after the unbind), so a
//   successor never binds while the old binding still holds the address.
// - Placement: an owned binding is placed when its VMI is Running, on a node, with an
//   address, and that node has an address to reach its agent at (the InternalIP).
import { canonicalIpv4 } from "../common/ipv4.js";
import { type EipBinding, type KubeNode, Reason, type Vmi, keyOf } from "./types.js";

export interface Placement {
  readonly node: string;
  /** Where the node's agent listens (its InternalIP). */
  readonly nodeAddress: string;
  readonly eip: string;
  readonly vmiAddress: string;
}

export type Decision =
  | { readonly kind: "place"; readonly placement: Placement }
  | { readonly kind: "unplace"; readonly reason: Reason; readonly message: string };

/** The node's address for its agent: the InternalIP (the seed took addresses[0]). */
export function nodeAddress(node: KubeNode): string | undefined {
  const addresses = node.status?.addresses ?? [];
  const internal = addresses.find((a) => a.type === "InternalIP" && canonicalIpv4(a.address));
  return internal ? canonicalIpv4(internal.address) : undefined;
}

export function decide(
  binding: EipBinding,
  vmi: Vmi | undefined,
  nodes: (name: string) => KubeNode | undefined,
): Decision {
  const { vmiName } = binding.spec;
  const ns = binding.metadata.namespace ?? "";
  if (!vmi) {
    return unplace(Reason.VmiNotFound, `VirtualMachineInstance ${ns}/${vmiName} does not exist`);
  }
  const phase = vmi.status?.phase ?? "";
  const nodeName = vmi.status?.nodeName ?? "";
  if (phase !== "Running" || !nodeName) {
    return unplace(
      Reason.VmiNotRunning,
      `VirtualMachineInstance ${vmiName} is ${phase || "not yet scheduled"}${nodeName ? ` on ${nodeName}` : ""}`,
    );
  }
  const vmiAddress = canonicalIpv4(vmi.status?.interfaces?.[0]?.ipAddress ?? "");
  if (!vmiAddress) {
    return unplace(
      Reason.VmiNoAddress,
      `VirtualMachineInstance ${vmiName} has no IPv4 address on its first interface yet`,
    );
  }
  const node = nodes(nodeName);
  if (!node) return unplace(Reason.NodeNotFound, `node ${nodeName} does not exist`);
  const address = nodeAddress(node);
  if (!address) {
    return unplace(
      Reason.NodeNoAddress,
      `node ${nodeName} has no InternalIP to reach its agent at`,
    );
  }
  const eip = canonicalIpv4(binding.spec.eipAddr ?? "") ?? binding.spec.eipAddr ?? "";
  return { kind: "place", placement: { node: nodeName, nodeAddress: address, eip, vmiAddress } };
}

function unplace(reason: Reason, message: string): Decision {
  return { kind: "unplace", reason, message };
}

/** Older first: creation time, then namespace/name. */
export function olderFirst(a: EipBinding, b: EipBinding): number {
  const ta = a.metadata.creationTimestamp ?? "";
  const tb = b.metadata.creationTimestamp ?? "";
  if (ta !== tb) return ta < tb ? -1 : 1;
  const ka = keyOf(a.metadata);
  const kb = keyOf(b.metadata);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** The binding that owns `eip` among those naming it (undefined when none does). */
export function ownerOf(eip: string, naming: Iterable<EipBinding>): EipBinding | undefined {
  let owner: EipBinding | undefined;
  for (const b of naming) {
    if (canonicalIpv4(b.spec.eipAddr ?? "") !== eip) continue;
    if (!owner || olderFirst(b, owner) < 0) owner = b;
  }
  return owner;
}
