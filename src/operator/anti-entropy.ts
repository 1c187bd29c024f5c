// Anti-entropy: every so often each agent is asked what it holds, and both kinds of
// difference with what the EipBindings want are fixed: a binding an agent lacks is queued
// for reconciling (which binds it), and a binding no EipBinding wants is unbound. A node
// rebuilt from scratch gets its EIPs back; a leftover of a failed unbind (an agent that was
// down during a move or a deletion) goes once its agent answers.
//
// The plan is pure. An unwanted binding is removed only when two passes in a row found it,
// so a binding made between an agent's answer and the caches' catching up is never taken.
// A binding an agent lacks is queued either way (a duplicate reconcile is harmless), but
// counted as lost only when its status says that agent holds it: one being bound, moved or
// deleted at that moment is in flight, not drift.
import { decide, ownerOf } from "./placement.js";
import { type DataplaneState, type EipBinding, type KubeNode, type Vmi, keyOf } from "./types.js";
import { canonicalIpv4 } from "../common/ipv4.js";

export interface AgentView {
  readonly node: string;
  readonly address: string;
  readonly held: readonly { eip: string; vmi: string; state?: DataplaneState }[];
}

export interface Want {
  readonly vmi: string;
  readonly key: string;
  /** Its EipBinding is being deleted: kept until its finalizer unbinds it. */
  readonly deleting?: true;
}

export interface AntiEntropyPlan {
  readonly unbind: readonly { node: string; address: string; eip: string; vmi: string }[];
  /** EipBindings to reconcile: their agent lacks them. */
  readonly enqueue: readonly string[];
  /** Of those, the ones their agent had (their status says so) and lost: drift. */
  readonly lost: readonly string[];
  /** This pass's unwanted bindings, for the next pass's grace check. */
  readonly unwanted: ReadonlySet<string>;
}

/** What every node must hold: node -> EIP -> VMI address and the EipBinding that wants it. */
export function desiredByNode(
  bindings: readonly EipBinding[],
  vmi: (ns: string, name: string) => Vmi | undefined,
  node: (name: string) => KubeNode | undefined,
): Map<string, Map<string, Want>> {
  const desired = new Map<string, Map<string, Want>>();
  const byEip = new Map<string, EipBinding[]>();
  for (const b of bindings) {
    const eip = canonicalIpv4(b.spec.eipAddr ?? "");
    if (!eip) continue;
    byEip.set(eip, [...(byEip.get(eip) ?? []), b]);
  }
  for (const [eip, naming] of byEip) {
    const owner = ownerOf(eip, naming);
    if (!owner) continue;
    const key = keyOf(owner.metadata);
    const put = (n: string, want: Want) => {
      const m = desired.get(n) ?? new Map<string, Want>();
      desired.set(n, m);
      m.set(eip, want);
    };
    const s = owner.status;
    if (owner.metadata.deletionTimestamp) {
      // Its finalizer unbinds it: leave what it holds alone meanwhile.
      if (s?.nodeName && s.vmiAddress && s.eipAddr === eip)
        put(s.nodeName, { vmi: s.vmiAddress, key, deleting: true });
      continue;
    }
    const d = decide(owner, vmi(owner.metadata.namespace ?? "", owner.spec.vmiName), node);
    if (d.kind === "place") put(d.placement.node, { vmi: d.placement.vmiAddress, key });
  }
  return desired;
}

export function planAntiEntropy(
  desired: ReadonlyMap<string, ReadonlyMap<string, Want>>,
  views: readonly AgentView[],
  /** Bindings recorded in some EipBinding's status: in flight, never unwanted. */
  recorded: ReadonlySet<string>,
  previouslyUnwanted: ReadonlySet<string>,
): AntiEntropyPlan {
  const unbind: { node: string; address: string; eip: string; vmi: string }[] = [];
  const enqueue = new Set<string>();
  const lost = new Set<string>();
  const unwanted = new Set<string>();
  for (const view of views) {
    const want = desired.get(view.node) ?? new Map<string, Want>();
    const held = new Map(view.held.map((h) => [h.eip, h.vmi]));
    for (const [eip, w] of want) {
      if (held.get(eip) === w.vmi) continue;
      enqueue.add(w.key);
      if (!w.deleting && recorded.has(bindingId(view.node, eip, w.vmi))) lost.add(w.key);
    }
    for (const [eip, vmi] of held) {
      if (want.get(eip)?.vmi === vmi) continue;
      const id = bindingId(view.node, eip, vmi);
      if (recorded.has(id)) continue;
      unwanted.add(id);
      if (previouslyUnwanted.has(id))
        unbind.push({ node: view.node, address: view.address, eip, vmi });
    }
  }
  return { unbind, enqueue: [...enqueue], lost: [...lost], unwanted };
}

export function bindingId(node: string, eip: string, vmi: string): string {
  return `${node}|${eip}|${vmi}`;
}

/** The bindings EipBinding statuses say the agents hold. */
export function recordedBindings(bindings: readonly EipBinding[]): Set<string> {
  const ids = new Set<string>();
  for (const b of bindings) {
    const s = b.status;
    if (s?.nodeName && s.eipAddr && s.vmiAddress)
      ids.add(bindingId(s.nodeName, s.eipAddr, s.vmiAddress));
  }
  return ids;
}
