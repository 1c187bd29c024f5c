// The Kubernetes objects the operator reads and writes, as far as it uses them, and the
// names it shares with the seed (COMPATIBILITY.md).

import { PoolReason } from "./pools/types.js";

export const GROUP = "extension.lucheng0127";
/** Ours. The seed's (spelled so) is kept on adopted objects and removed with ours. */
export const FINALIZER = "extension.lucheng0127/eip-binding";
export const SEED_FINALIZER = "extension.lucheng0127/finlizer";

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface EipBindingStatus {
  eipAddr?: string;
  nodeName?: string;
  vmiAddress?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface EipBinding {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  /** eipAddr is empty until the operator allocates one from a pool (pools/allocator.ts). */
  spec: { eipAddr?: string; vmiName: string; poolName?: string };
  status?: EipBindingStatus;
}

export interface Vmi {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  status?: {
    phase?: string;
    nodeName?: string;
    interfaces?: { ipAddress?: string; name?: string }[];
  };
}

export interface KubeNode {
  metadata: ObjectMeta;
  status?: {
    addresses?: { type: string; address: string }[];
    conditions?: { type: string; status: string; lastTransitionTime?: string }[];
  };
}

/** One of a binding's dataplane conditions as its agent read it back (ListBindings). */
export interface DataplaneCondition {
  readonly status: "True" | "False" | "Unknown";
  readonly reason: string;
  readonly message: string;
}

/** What the node and the network really do for a binding: the Programmed and Announced conditions. */
export interface DataplaneState {
  readonly programmed: DataplaneCondition;
  readonly announced: DataplaneCondition;
}

/** Why a binding is (not) Ready: the Ready condition's reasons. */
export const Reason = {
  Bound: "Bound",
  ...PoolReason,
  VmiNotFound: "VMINotFound",
  VmiNotRunning: "VMINotRunning",
  VmiNoAddress: "VMINoAddress",
  NodeNotFound: "NodeNotFound",
  NodeNoAddress: "NodeNoAddress",
  EipConflict: "EipConflict",
  InvalidEip: "InvalidEip",
  AgentUnavailable: "AgentUnavailable",
  NotProgrammed: "NotProgrammed",
  NotAnnounced: "NotAnnounced",
  AgentRefused: "AgentRefused",
  Unbinding: "Unbinding",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export function keyOf(meta: ObjectMeta): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}
