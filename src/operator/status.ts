// An EipBinding's status from what the reconciler found and did: pure, the clock passed in.
// The conditions have the standard shape (kubectl wait --for=condition=Ready works); each
// one's lastTransitionTime moves only when its status does.
//
// Programmed and Announced say what the binding's agent read back (its ListBindings): the
// kernel holds the NAT, routes and address or ARP answer; an established BGP peer has been
// sent the route, or the gateway device answers ARP for the EIP. They are there while an
// agent holds the binding. Ready is True only when the binding is placed and bound and both
// are True; else False with the reason of the first that is not (NotProgrammed,
// NotAnnounced) or of the placement.
import {
  type Condition,
  type DataplaneCondition,
  type DataplaneState,
  type EipBinding,
  type EipBindingStatus,
  Reason,
} from "./types.js";

export interface Outcome {
  /** What the agents hold for this binding now; undefined when nothing. */
  readonly applied: { eip: string; node: string; vmiAddress: string } | undefined;
  /** Placed and bound (Ready once the dataplane says so too). */
  readonly ready: boolean;
  readonly reason: Reason;
  readonly message: string;
  /** What the agent holding it read back; absent when no agent holds it. */
  readonly dataplane?: DataplaneState;
}

export const DATAPLANE_TYPES = ["Programmed", "Announced"] as const;

/** The Ready status, reason and message from the placement's outcome and the dataplane's. */
function readiness(outcome: Outcome): Pick<Condition, "status" | "reason" | "message"> {
  if (!outcome.ready) return { status: "False", reason: outcome.reason, message: outcome.message };
  const d = outcome.dataplane;
  const not = (c: DataplaneCondition, reason: Reason, what: string) => ({
    status: "False" as const,
    reason,
    message: `${outcome.message}, but ${what} is ${c.status} (${c.reason}): ${c.message}`,
  });
  if (d && d.programmed.status !== "True")
    return not(d.programmed, Reason.NotProgrammed, "Programmed");
  if (d && d.announced.status !== "True") return not(d.announced, Reason.NotAnnounced, "Announced");
  return { status: "True", reason: outcome.reason, message: outcome.message };
}

export function nextStatus(binding: EipBinding, outcome: Outcome, now: string): EipBindingStatus {
  const generation = binding.metadata.generation ?? 0;
  const before = binding.status?.conditions ?? [];
  const condition = (type: string, c: Pick<Condition, "status" | "reason" | "message">) => {
    const previous = before.find((p) => p.type === type);
    return {
      type,
      status: c.status,
      observedGeneration: generation,
      lastTransitionTime:
        previous && previous.status === c.status ? previous.lastTransitionTime : now,
      reason: c.reason,
      message: c.message,
    };
  };
  const ready: Condition = condition("Ready", readiness(outcome));
  const d = outcome.applied ? outcome.dataplane : undefined;
  const dataplane = d
    ? [condition("Programmed", d.programmed), condition("Announced", d.announced)]
    : [];
  const ours = new Set<string>(["Ready", ...DATAPLANE_TYPES]);
  const others = before.filter((c) => !ours.has(c.type));
  return {
    ...(outcome.applied
      ? {
          eipAddr: outcome.applied.eip,
          nodeName: outcome.applied.node,
          vmiAddress: outcome.applied.vmiAddress,
        }
      : {}),
    observedGeneration: generation,
    conditions: [...others, ...dataplane, ready],
  };
}

/** An Event for each dataplane condition that turned False, or True again after not being. */
export function dataplaneEvents(
  before: EipBindingStatus | undefined,
  after: EipBindingStatus,
): { type: "Normal" | "Warning"; reason: string; note: string }[] {
  const events: { type: "Normal" | "Warning"; reason: string; note: string }[] = [];
  for (const type of DATAPLANE_TYPES) {
    const was = before?.conditions?.find((c) => c.type === type);
    const now = after.conditions?.find((c) => c.type === type);
    if (now === undefined || now.status === was?.status) continue;
    if (now.status === "False") {
      events.push({ type: "Warning", reason: `Not${type}`, note: `${now.reason}: ${now.message}` });
    } else if (now.status === "True" && was !== undefined) {
      events.push({ type: "Normal", reason: type, note: now.message });
    }
  }
  return events;
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
