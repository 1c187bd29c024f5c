// An EipBinding's status from what the reconciler found and did: pure, the clock passed in.
// The Ready condition has the standard shape (kubectl wait --for=condition=Ready works); its
// lastTransitionTime moves only when its status does.
import type { Condition, EipBinding, EipBindingStatus, Reason } from "./types.js";

export interface Outcome {
  /** What the agents hold for this binding now; undefined when nothing. */
  readonly applied: { eip: string; node: string; vmiAddress: string } | undefined;
  readonly ready: boolean;
  readonly reason: Reason;
  readonly message: string;
}

export function nextStatus(binding: EipBinding, outcome: Outcome, now: string): EipBindingStatus {
  const generation = binding.metadata.generation ?? 0;
  const previous = binding.status?.conditions?.find((c) => c.type === "Ready");
  const status: Condition["status"] = outcome.ready ? "True" : "False";
  const ready: Condition = {
    type: "Ready",
    status,
    observedGeneration: generation,
    lastTransitionTime: previous && previous.status === status ? previous.lastTransitionTime : now,
    reason: outcome.reason,
    message: outcome.message,
  };
  const others = (binding.status?.conditions ?? []).filter((c) => c.type !== "Ready");
  return {
    ...(outcome.applied
      ? {
          eipAddr: outcome.applied.eip,
          nodeName: outcome.applied.node,
          vmiAddress: outcome.applied.vmiAddress,
        }
      : {}),
    observedGeneration: generation,
    conditions: [...others, ready],
  };
}

/** True when writing `next` would change nothing a reader sees. */
export function sameStatus(current: EipBindingStatus | undefined, next: EipBindingStatus): boolean {
  const c = current ?? {};
  if (
    c.eipAddr !== next.eipAddr ||
    c.nodeName !== next.nodeName ||
    c.vmiAddress !== next.vmiAddress ||
    c.observedGeneration !== next.observedGeneration
  ) {
    return false;
  }
  const a = c.conditions ?? [];
  const b = next.conditions ?? [];
  return (
    a.length === b.length &&
    a.every((x, i) => {
      const y = b[i];
      return (
        y !== undefined &&
        x.type === y.type &&
        x.status === y.status &&
        x.reason === y.reason &&
        x.message === y.message &&
        x.observedGeneration === y.observedGeneration
      );
    })
  );
}

/** A JSON merge patch of the status subresource that makes it `next` (null removes). */
export function statusPatch(next: EipBindingStatus): { status: Record<string, unknown> } {
  return {
    status: {
      eipAddr: next.eipAddr ?? null,
      nodeName: next.nodeName ?? null,
      vmiAddress: next.vmiAddress ?? null,
      observedGeneration: next.observedGeneration ?? null,
      conditions: next.conditions ?? [],
    },
  };
}
