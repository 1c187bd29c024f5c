// Anti-entropy's second half: what each agent read back for the bindings it holds becomes
// their Programmed and Announced conditions (and Ready), without a reconcile: a binding an
// agent holds as its EipBinding wants, on the node and with the VMI its status records,
// takes the agent's conditions; one on a node whose agent did not answer is Ready False
// (AgentUnavailable) with both conditions Unknown. Pure: the controller writes the outcomes.
//
// Nothing here binds or queues: a binding the agent lacks is anti-entropy's first half
// (anti-entropy.ts), and one that is not placed and bound (its Ready reason is the
// placement's: VMINotRunning, EipConflict, a failed bind the work queue retries...) is the
// reconciler's.
import type { AgentView, Want } from "./anti-entropy.js";
import { type Applied, boundMessage, dataplaneUnknown } from "./reconciler.js";
import type { Outcome } from "./status.js";
import { type EipBinding, Reason, keyOf } from "./types.js";

/** Ready reasons of a binding placed and bound, whose dataplane anti-entropy keeps up to date. */
const BOUND_REASONS = new Set<string>([
  Reason.Bound,
  Reason.NotProgrammed,
  Reason.NotAnnounced,
  Reason.AgentUnavailable,
]);

export interface Unreachable {
  readonly node: string;
  readonly address: string;
  readonly reason: string;
}

export interface DataplaneUpdate {
  readonly binding: EipBinding;
  readonly outcome: Outcome;
}

export function planDataplaneUpdates(
  bindings: readonly EipBinding[],
  desired: ReadonlyMap<string, ReadonlyMap<string, Want>>,
  views: readonly AgentView[],
  unreachable: readonly Unreachable[],
): DataplaneUpdate[] {
  const viewOf = new Map(views.map((v) => [v.node, v]));
  const downOf = new Map(unreachable.map((u) => [u.node, u]));
  const updates: DataplaneUpdate[] = [];
  for (const b of bindings) {
    const s = b.status;
    if (b.metadata.deletionTimestamp || !s?.eipAddr || !s.nodeName || !s.vmiAddress) continue;
    const ready = s.conditions?.find((c) => c.type === "Ready");
    if (!ready || !BOUND_REASONS.has(ready.reason)) continue;
    const applied: Applied = { eip: s.eipAddr, node: s.nodeName, vmiAddress: s.vmiAddress };
    const want = desired.get(applied.node)?.get(applied.eip);
    if (!want || want.deleting || want.key !== keyOf(b.metadata) || want.vmi !== applied.vmiAddress)
      continue;
    const down = downOf.get(applied.node);
    if (down) {
      const message = `the agent on ${down.node} (${down.address}) did not answer: ${down.reason}`;
      updates.push({
        binding: b,
        outcome: {
          applied,
          ready: false,
          reason: Reason.AgentUnavailable,
          message,
          dataplane: dataplaneUnknown(Reason.AgentUnavailable, message),
        },
      });
      continue;
    }
    const held = viewOf
      .get(applied.node)
      ?.held.find((h) => h.eip === applied.eip && h.vmi === applied.vmiAddress);
    if (!held?.state) continue; // lacking: anti-entropy's first half queues it
    updates.push({
      binding: b,
      outcome: {
        applied,
        ready: true,
        reason: Reason.Bound,
        message: boundMessage(b, applied),
        dataplane: held.state,
      },
    });
  }
  return updates;
}
