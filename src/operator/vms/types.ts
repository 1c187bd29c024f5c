// Asking for an EIP on the VM itself: the annotation, the VirtualMachine object as the
// operator reads it, and the marks on the EipBindings it makes for them.
import type { ObjectMeta } from "../types.js";

/** On a VirtualMachine (or its template) or a bare VMI: "auto" or an EipPool's name. */
export const EIP_ANNOTATION = "kube-eip.lucheng0127/eip";
/** The value that asks for the default pool. */
export const AUTO = "auto";
/** On the EipBindings the operator made for an annotation (with the owner reference). */
export const MANAGED_BY_LABEL = "kube-eip.lucheng0127/managed-by";
export const MANAGED_BY = "eip-operator";

export interface VirtualMachine {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: { template?: { metadata?: { annotations?: Record<string, string> } } };
}

/** The Events the operator records on a VM or a VMI about its binding. */
export const VmReason = {
  Created: "EipBindingCreated",
  Deleted: "EipBindingDeleted",
  /** The VMI has an EipBinding someone else made: it is the one that counts. */
  UserBinding: "EipBindingByUser",
  /** An EipBinding not made by the operator has the VM's name. */
  NameTaken: "EipBindingNameTaken",
  InvalidAnnotation: "InvalidEipAnnotation",
  /** Creating or deleting the binding failed (retried with backoff). */
  Failed: "EipBindingFailed",
} as const;
export type VmReason = (typeof VmReason)[keyof typeof VmReason];
