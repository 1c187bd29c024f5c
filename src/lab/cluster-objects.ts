// The objects the lab's cluster writes (cluster.ts), as a kubelet, virt-controller and
// virt-handler would: Node objects and their status, VMI objects and their status. Pure.
import { release } from "node:os";
import type { NodeInfo } from "./lab.js";

/** The label virt-controller keeps on a VMI: the node it runs on. */
export const NODE_NAME_LABEL = "kubevirt.io/nodeName";

export type VmiPhase =
  "Pending" | "Scheduling" | "Scheduled" | "Running" | "Succeeded" | "Failed" | "Unknown";

const PHASES: readonly VmiPhase[] = [
  "Pending",
  "Scheduling",
  "Scheduled",
  "Running",
  "Succeeded",
  "Failed",
  "Unknown",
];
/** Phases in which the VMI has a node (status.nodeName). */
export const PLACED: ReadonlySet<VmiPhase> = new Set([
  "Scheduled",
  "Running",
  "Succeeded",
  "Failed",
  "Unknown",
]);
/** Phases in which virt-handler has reported the interfaces. */
const REPORTED: ReadonlySet<VmiPhase> = new Set(["Running", "Succeeded", "Failed", "Unknown"]);

/** What the cluster knows of one of its VMIs. */
export interface VmiRecord {
  name: string;
  namespace: string;
  node: number;
  address: string;
  phase: VmiPhase;
  plugged: boolean;
  /** Invented while no lab VMI backs the object; the lab VMI's own once plugged. */
  mac: string;
  migration: Record<string, unknown> | undefined;
  /** The node the kubevirt.io/nodeName label names, as last written. */
  labelNode: number | undefined;
  ownerReferences?: readonly Record<string, unknown>[] | undefined;
}

/** metav1.Time: RFC 3339 in whole seconds. */
export function kubeTime(date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function checkPhase(phase: string): VmiPhase {
  if (!PHASES.includes(phase as VmiPhase)) {
    throw new Error(`unknown VMI phase ${JSON.stringify(phase)}: one of ${PHASES.join(", ")}`);
  }
  return phase as VmiPhase;
}

const NAMESPACE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function checkNamespace(ns: string): string {
  if (!NAMESPACE_RE.test(ns)) throw new Error(`invalid namespace name ${JSON.stringify(ns)}`);
  return ns;
}

/** A Node object as a kubelet registers it (its status goes through the subresource). */
export function nodeObject(n: NodeInfo): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: n.name,
      labels: {
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubevirt.io/schedulable": "true",
      },
      annotations: { "kube-eip.lab/netns": n.namespace },
    },
    spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
  };
}

/** The status a kubelet posts for its node (a merge patch): Ready, addresses, capacity. */
export function nodeStatusPatch(n: NodeInfo, kubeletVersion: string): Record<string, unknown> {
  const now = kubeTime();
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  const resources = { cpu: "2", memory: "8Gi", pods: "110", "devices.kubevirt.io/kvm": "1k" };
  return {
    status: {
      addresses: [
        { type: "InternalIP", address: n.mgmtAddress },
        { type: "Hostname", address: n.name },
      ],
      conditions: [
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "lab node"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "lab node"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "lab node"),
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
      ],
      capacity: resources,
      allocatable: resources,
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: "",
        systemUUID: "",
        bootID: "",
        kernelVersion: release(),
        osImage: `kube-eip lab (network namespace ${n.namespace})`,
        containerRuntimeVersion: "none://",
        kubeletVersion,
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: "amd64",
      },
    },
  };
}

/** The VMI object of a record, as virt-controller's users create it. */
export function vmiObject(rec: VmiRecord, nodeName: string): Record<string, unknown> {
  const placed = PLACED.has(rec.phase);
  return {
    apiVersion: "kubevirt.io/v1",
    kind: "VirtualMachineInstance",
    metadata: {
      name: rec.name,
      namespace: rec.namespace,
      labels: {
        "kubevirt.io/domain": rec.name,
        ...(placed ? { [NODE_NAME_LABEL]: nodeName } : {}),
      },
      ...(rec.ownerReferences ? { ownerReferences: rec.ownerReferences } : {}),
      annotations: {
        "kubevirt.io/latest-observed-api-version": "v1",
        "kubevirt.io/storage-observed-api-version": "v1",
      },
    },
    spec: {
      domain: {
        cpu: { cores: 1, sockets: 1, threads: 1 },
        memory: { guest: "128Mi" },
        resources: { requests: { memory: "128Mi" } },
        machine: { type: "q35" },
        devices: {
          disks: [{ name: "containerdisk", disk: { bus: "virtio" } }],
          interfaces: [{ name: "default", bridge: {} }],
        },
      },
      networks: [{ name: "default", pod: {} }],
      volumes: [
        {
          name: "containerdisk",
          containerDisk: { image: "quay.io/kubevirt/cirros-container-disk-demo:latest" },
        },
      ],
      terminationGracePeriodSeconds: 0,
    },
  };
}
/**
 * The whole status virt-handler would hold for the record, as a merge patch of `status`:
 * fields that do not apply in the phase are null (removed).
 */
export function vmiStatusPatch(rec: VmiRecord, nodeName: string): Record<string, unknown> {
  const placed = PLACED.has(rec.phase);
  const reported = REPORTED.has(rec.phase);
  return {
    phase: rec.phase,
    nodeName: placed ? nodeName : null,
    interfaces: reported
      ? [
          {
            name: "default",
            interfaceName: "eth0",
            ipAddress: rec.address,
            ipAddresses: [rec.address],
            mac: rec.mac,
            infoSource: "domain, guest-agent",
            queueCount: 1,
          },
        ]
      : null,
    conditions: [
      {
        type: "Ready",
        status: rec.phase === "Running" ? "True" : "False",
        lastProbeTime: null,
        lastTransitionTime: kubeTime(),
      },
    ],
    migrationState: rec.migration ?? null,
    qosClass: "Burstable",
  };
}
