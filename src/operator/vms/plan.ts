// Which EipBinding the annotation on a VirtualMachine or a bare VMI asks for, and what to do
// to get there. Pure: one name in one namespace at a time, from what the caches hold.
//
// A VM's VMI has the VM's name, so one name is one request: the VM's annotation (on the VM
// or on its template) when a VirtualMachine of that name exists, else the annotation of a
// VMI of that name that no VirtualMachine controls (a bare VMI). The binding the operator
// makes has the same name, the requester as its controller owner reference and the
// MANAGED_BY label; only such a binding is ever deleted. Because a VM's binding is owned by
// the VM, not by its VMI, it (and so its allocated address) stays while VMIs come and go.
//
// Conflicts: an EipBinding someone else made naming the VMI wins (the agents hold one EIP
// per VMI): the operator makes none while it exists and deletes its own when one appears.
// An EipBinding someone else made with the requester's name but for another VMI blocks
// the request (nothing is made; an Event says why). An annotation whose value is no pool
// name changes nothing. A binding whose owner or pool no longer match is deleted, and made
// again once it is gone (its finalizer has the agent unbind first).
import type { EipBinding, OwnerReference, Vmi } from "../types.js";
import {
  AUTO,
  EIP_ANNOTATION,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  type VirtualMachine,
} from "./types.js";
import { VmReason } from "./types.js";

/** The VM or bare VMI asking for a binding. */
export interface Requester {
  readonly kind: "VirtualMachine" | "VirtualMachineInstance";
  readonly object: VirtualMachine | Vmi;
}

export interface PlanInput {
  readonly namespace: string;
  readonly name: string;
  readonly vm: VirtualMachine | undefined;
  readonly vmi: Vmi | undefined;
  /** The EipBinding of this name in the namespace. */
  readonly named: EipBinding | undefined;
  /** The EipBindings of the namespace whose spec.vmiName is this name. */
  readonly forVmi: readonly EipBinding[];
}

export type VmAction =
  | { readonly kind: "none" }
  | { readonly kind: "create"; readonly binding: EipBinding; readonly requester: Requester }
  | {
      readonly kind: "delete";
      readonly binding: EipBinding;
      readonly why: string;
      readonly requester: Requester | undefined;
    }
  /** Nothing to do but say why: a Warning, or (UserBinding) a Normal Event on the requester. */
  | {
      readonly kind: "report";
      readonly requester: Requester;
      readonly reason: VmReason;
      readonly message: string;
    };

const NONE: VmAction = { kind: "none" };
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The controller owner reference, if it is a KubeVirt VirtualMachine. */
function vmController(vmi: Vmi): OwnerReference | undefined {
  return vmi.metadata.ownerReferences?.find(
    (r) =>
      r.controller === true &&
      r.kind === "VirtualMachine" &&
      groupOf(r.apiVersion) === "kubevirt.io",
  );
}

function groupOf(apiVersion: string): string {
  return apiVersion.includes("/") ? (apiVersion.split("/")[0] ?? "") : "";
}

/** True for a binding the operator made for an annotation: its label and a KubeVirt owner. */
export function isManaged(b: EipBinding): boolean {
  return b.metadata.labels?.[MANAGED_BY_LABEL] === MANAGED_BY && managedOwner(b) !== undefined;
}

function managedOwner(b: EipBinding): OwnerReference | undefined {
  return b.metadata.ownerReferences?.find(
    (r) =>
      r.controller === true &&
      (r.kind === "VirtualMachine" || r.kind === "VirtualMachineInstance") &&
      groupOf(r.apiVersion) === "kubevirt.io",
  );
}

/** The VM, else the bare VMI, of the name. */
function candidate(input: PlanInput): Requester | undefined {
  const { vm, vmi } = input;
  if (vm) return { kind: "VirtualMachine", object: vm };
  if (vmi && !vmController(vmi)) return { kind: "VirtualMachineInstance", object: vmi };
  return undefined;
}

/** Who asks, and with which annotation value (undefined: nobody asks). */
function request(input: PlanInput): { requester: Requester; value: string } | undefined {
  const requester = candidate(input);
  if (!requester || requester.object.metadata.deletionTimestamp) return undefined;
  const { object } = requester;
  const value =
    object.metadata.annotations?.[EIP_ANNOTATION] ??
    (requester.kind === "VirtualMachine"
      ? (object as VirtualMachine).spec?.template?.metadata?.annotations?.[EIP_ANNOTATION]
      : undefined);
  return value === undefined ? undefined : { requester, value };
}

/** The pool an annotation value asks for (undefined: the default), or why it is invalid. */
export function poolOf(value: string): { pool: string | undefined } | { error: string } {
  const v = value.trim();
  if (v === AUTO) return { pool: undefined };
  if (v.length > 253 || !SUBDOMAIN.test(v)) {
    return {
      error: `annotation ${EIP_ANNOTATION}: ${JSON.stringify(value)} is neither "${AUTO}" nor an EipPool name`,
    };
  }
  return { pool: v };
}

/** The EipBinding made for a requester. */
export function bindingFor(requester: Requester, pool: string | undefined): EipBinding {
  const { name, namespace, uid } = requester.object.metadata;
  return {
    apiVersion: "extension.lucheng0127/v1",
    kind: "EipBinding",
    metadata: {
      name,
      ...(namespace ? { namespace } : {}),
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY },
      ownerReferences: [
        {
          apiVersion: requester.object.apiVersion ?? "kubevirt.io/v1",
          kind: requester.kind,
          name,
          uid: uid ?? "",
          controller: true,
        },
      ],
    },
    spec: { vmiName: name, ...(pool ? { poolName: pool } : {}) },
  };
}

export function plan(input: PlanInput): VmAction {
  const { named } = input;
  const ours = named && isManaged(named) ? named : undefined;
  const asked = request(input);
  if (!asked) {
    if (!ours || ours.metadata.deletionTimestamp) return NONE;
    const requesterNow = candidate(input);
    const owner = managedOwner(ours) as OwnerReference;
    return {
      kind: "delete",
      binding: ours,
      why: !requesterNow
        ? `${owner.kind} ${input.name} is gone`
        : requesterNow.object.metadata.deletionTimestamp
          ? `${requesterNow.kind} ${input.name} is being deleted`
          : `${requesterNow.kind} ${input.name} does not ask for an EIP`,
      requester: requesterNow,
    };
  }
  const { requester } = asked;
  const wanted = poolOf(asked.value);
  if ("error" in wanted) {
    return {
      kind: "report",
      requester,
      reason: VmReason.InvalidAnnotation,
      message: `${wanted.error}; nothing changed`,
    };
  }
  const theirs = [...input.forVmi, ...(named && !ours ? [named] : [])].find(
    (b) => !isManaged(b) && b.spec.vmiName === input.name && !b.metadata.deletionTimestamp,
  );
  if (theirs) {
    if (ours && !ours.metadata.deletionTimestamp) {
      return {
        kind: "delete",
        binding: ours,
        why: `EipBinding ${theirs.metadata.name}, not made for the annotation, names VMI ${input.name}: it wins`,
        requester,
      };
    }
    return {
      kind: "report",
      requester,
      reason: VmReason.UserBinding,
      message: `EipBinding ${theirs.metadata.name} names VMI ${input.name}: the annotation adds none`,
    };
  }
  if (named && !ours) {
    return {
      kind: "report",
      requester,
      reason: VmReason.NameTaken,
      message: `EipBinding ${input.namespace}/${input.name} exists for VMI ${named.spec.vmiName} and was not made for the annotation: none is made`,
    };
  }
  if (!ours) return { kind: "create", binding: bindingFor(requester, wanted.pool), requester };
  if (ours.metadata.deletionTimestamp) return NONE; // made again once it is gone
  const owner = managedOwner(ours) as OwnerReference;
  if (owner.uid !== requester.object.metadata.uid || owner.kind !== requester.kind) {
    return {
      kind: "delete",
      binding: ours,
      why: `it belongs to ${owner.kind} ${owner.name} (uid ${owner.uid}), not to ${requester.kind} ${input.name} (uid ${requester.object.metadata.uid ?? ""})`,
      requester,
    };
  }
  if ((ours.spec.poolName ?? undefined) !== wanted.pool) {
    return {
      kind: "delete",
      binding: ours,
      why: `the annotation asks for ${wanted.pool ? `EipPool ${wanted.pool}` : "the default pool"}, the binding for ${ours.spec.poolName ? `EipPool ${ours.spec.poolName}` : "the default pool"}`,
      requester,
    };
  }
  return NONE;
}
