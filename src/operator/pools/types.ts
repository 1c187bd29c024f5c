// The EipPool object as the operator reads it, and the names the pools add to EipBindings.
import type { Condition, ObjectMeta } from "../types.js";

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: {
    key: string;
    operator: "In" | "NotIn" | "Exists" | "DoesNotExist";
    values?: string[];
  }[];
}

export interface EipPoolSpec {
  addresses: string[];
  exclude?: string[];
  namespaces?: string[];
  namespaceSelector?: LabelSelector;
  perNamespaceLimit?: number;
  default?: boolean;
}

export interface EipPoolStatus {
  allocated?: number;
  free?: number;
  observedGeneration?: number;
  conditions?: Condition[];
}

export interface EipPool {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec: EipPoolSpec;
  status?: EipPoolStatus;
}

export interface Namespace {
  metadata: ObjectMeta & { labels?: Record<string, string> };
}

/** Set by the operator, with spec.eipAddr, on a binding it allocated an address to. */
export const ALLOCATED_FROM = "kube-eip.lucheng0127/allocated-from";

/** The Ready reasons the pools add. */
export const PoolReason = {
  NotInPool: "NotInPool",
  QuotaExceeded: "QuotaExceeded",
  PoolExhausted: "PoolExhausted",
  PoolNotFound: "PoolNotFound",
} as const;
export type PoolReason = (typeof PoolReason)[keyof typeof PoolReason];
