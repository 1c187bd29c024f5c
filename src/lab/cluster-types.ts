// The lab cluster's constants (ports, CRD files and names) and the types of its API
// (cluster.ts starts it, lab-cluster.ts is the cluster).
import { fileURLToPath } from "node:url";
import type { VmiPhase } from "./cluster-objects.js";

/** The agent's gRPC port on every node (COMPATIBILITY.md). */
export const AGENT_PORT = 6127;

const REPO = new URL("../../../", import.meta.url);
export const EIPBINDING_CRD = fileURLToPath(
  new URL("config/crd/bases/extension.lucheng0127_eipbindings.yaml", REPO),
);
export const EIPPOOL_CRD = fileURLToPath(
  new URL("config/crd/bases/extension.lucheng0127_eippools.yaml", REPO),
);
export const VMI_CRD = fileURLToPath(new URL("e2e/fixtures/kubevirt-vmi-crd.yaml", REPO));
export const VM_CRD = fileURLToPath(new URL("e2e/fixtures/kubevirt-vm-crd.yaml", REPO));
export const EIPBINDING_CRD_NAME = "eipbindings.extension.lucheng0127";
export const EIPPOOL_CRD_NAME = "eippools.extension.lucheng0127";
export const VMI_CRD_NAME = "virtualmachineinstances.kubevirt.io";
export const VM_CRD_NAME = "virtualmachines.kubevirt.io";
/** The relay from a Unix socket to the apiserver (compiled next to this file). */
export const RELAY_SCRIPT = fileURLToPath(new URL("./unix-relay.js", import.meta.url));
/** What the cluster's description file is called in its run dir. */
export const CLUSTER_FILE = "cluster.json";

export interface LabClusterOptions {
  /** Run dir of the control plane; default `<lab.runDir>/cluster` (removed with the lab). */
  readonly dir?: string;
  /** Namespace of VMIs when a call names none; default "default" (created if missing). */
  readonly namespace?: string;
  /** Requests in flight at once in bulk writes, default 32. */
  readonly concurrency?: number;
}

export interface ClusterVmi {
  readonly name: string;
  /** The Kubernetes namespace of the object. */
  readonly namespace: string;
  /** Lab node index (1-based). */
  readonly node: number;
  /** `node<i>`: the Node object and status.nodeName. */
  readonly nodeName: string;
  readonly address: string;
  readonly mac: string;
  readonly phase: VmiPhase;
  /** A lab VMI (a network namespace on the node's cni0) backs the object. */
  readonly plugged: boolean;
  /** The lab VMI's network namespace, when plugged. */
  readonly netns: string | undefined;
  /** The migrationState of the last completed move, undefined before any. */
  readonly migrationState: Readonly<Record<string, unknown>> | undefined;
}

export interface CreateVmiOptions {
  /** Kubernetes namespace, default the cluster's. */
  readonly namespace?: string;
  /** Default Running. */
  readonly phase?: VmiPhase;
  /** Address in the node's pod /24, default the next free one from .10. */
  readonly address?: string;
  /** The object's metadata.ownerReferences (a VM's VMI: src/lab/vms.ts). */
  readonly ownerReferences?: readonly Record<string, unknown>[];
}

export interface BulkVmiSpec {
  readonly name: string;
  readonly node: number;
  readonly address?: string;
  readonly ownerReferences?: readonly Record<string, unknown>[];
}

/**
 * Where a VMI's address comes from. "node": its node's pod /24. "spare": the pod network's
 * /24s that no node owns (after the last node's), one pool for the whole cluster, so two
 * nodes can hold thousands of VMI objects; inside the pod network (the agents'
 * --internal-net), never plugged (no node's cni0 serves it).
 */
export type AddressPool = "node" | "spare";

export interface CreateVmisOptions {
  readonly namespace?: string;
  readonly phase?: VmiPhase;
  /** Also make a lab VMI for each (default true); false writes the API objects only. */
  readonly plug?: boolean;
  /** Default "node"; "spare" needs `plug: false`. */
  readonly addressPool?: AddressPool;
  /** Requests in flight at once, default the cluster's. */
  readonly concurrency?: number;
}

export interface ClusterStartup {
  /** etcd and kube-apiserver up (certificates included). */
  readonly controlPlaneMs: number;
  /** The CRDs applied and established. */
  readonly crdsMs: number;
  /** Node objects and their status. */
  readonly nodesMs: number;
  readonly totalMs: number;
}
