// Pod egress as a real CNI gives it (flannel's ipMasq, Calico's natOutgoing): traffic from
// the pod network to anywhere outside it is accepted and MASQUERADEd to the node's address,
// and its replies are accepted. The lab's nodes otherwise accept only in-cluster traffic
// (LAB-CNI-FORWARD: pod <-> pod, node network <-> pods) under FORWARD policy DROP, so a pod
// cannot reach an EIP at all; a test of the hairpin turns this on for the pod's node.
// Everything else of the CNI stays: traffic from the outside to a pod is still dropped.
// And the bridge plugin's hairpinMode (what kubelet asks of it): a bridge port may send a
// frame back out the port it came in on, so a VMI whose traffic to its own EIP is DNATed
// back to itself gets it (a bridge drops such a frame otherwise).
import { CNI_FORWARD_CHAIN, vmiHostVeth } from "./topology.js";
import type { Lab } from "./lab.js";

/** The iptables-restore input that gives node pods egress (appended, nothing flushed). */
export function cniEgressInput(podNet: string): string {
  return [
    "*nat",
    `-A POSTROUTING -s ${podNet} ! -d ${podNet} -m comment --comment "lab-cni: pod egress" -j MASQUERADE`,
    "COMMIT",
    "*filter",
    `-A ${CNI_FORWARD_CHAIN} -s ${podNet} ! -d ${podNet} -m comment --comment "lab-cni: pod egress" -j ACCEPT`,
    `-A ${CNI_FORWARD_CHAIN} -d ${podNet} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "lab-cni: replies to pod egress" -j ACCEPT`,
    "COMMIT",
    "",
  ].join("\n");
}

/** Gives the pods and VMIs of node `node` egress, on that node's iptables backend. */
export async function enableCniEgress(lab: Lab, node: number): Promise<void> {
  const mode = lab.node(node).iptablesMode;
  await lab.nodeExec(node, [`iptables-${mode}-restore`, "--noflush", "-w", "5"], {
    input: cniEgressInput(lab.topology.podNet),
  });
}

/** Turns on hairpin mode on the VMI's port of its node's cni0, as the CNI bridge plugin does. */
export async function enableHairpinMode(lab: Lab, vmi: string): Promise<void> {
  const { node } = lab.describe().vmis.find((v) => v.name === vmi) ?? {};
  if (node === undefined) throw new Error(`no VMI ${vmi} in the lab`);
  await lab.nodeExec(node, [
    "ip",
    "link",
    "set",
    "dev",
    vmiHostVeth(vmi),
    "type",
    "bridge_slave",
    "hairpin",
    "on",
  ]);
}
