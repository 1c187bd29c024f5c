// Reconciles one EipBinding, by level, from the caches: decide where its EIP must be, tell
// the agents (on a move: the new node first, then the old one), then write what is true
// into its status. What the agents hold for a binding is what its status says it holds
// (eipAddr, nodeName, vmiAddress): written only after the agents answered, so a crash at any
// point leaves a status that is at worst behind, and the next pass repeats idempotent calls.
//
// Failures never stick: a failed call is reported in the Ready condition and an Event, and
// the reconcile throws so the work queue retries the key with backoff.
import type { Logger } from "pino";
import { canonicalIpv4 } from "../common/ipv4.js";
import { type Placement, decide, ownerOf } from "./placement.js";
import type { PoolChecks } from "./pools/gate.js";
import { type Outcome, dataplaneEvents, nextStatus, sameStatus } from "./status.js";
import {
  type DataplaneState,
  type EipBinding,
  type EipBindingStatus,
  FINALIZER,
  type KubeNode,
  Reason,
  SEED_FINALIZER,
  type Vmi,
  keyOf,
} from "./types.js";
import { nodeAddress } from "./placement.js";
import { eipProblem } from "./address-checks.js";

/** An agent's answer, or why there was none. */
export type AgentResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly unreachable: boolean; readonly reason: string };

export interface AgentCalls {
  bind(nodeAddress: string, eip: string, vmi: string): Promise<AgentResult>;
  unbind(nodeAddress: string, eip: string, vmi: string): Promise<AgentResult>;
  /** What the agent holds; rejects when it cannot be asked. */
  list(nodeAddress: string): Promise<readonly { eip: string; vmi: string }[]>;
  /**
   * What the agent read back for the binding of this EIP, if it holds it with this VMI;
   * rejects when it cannot be asked.
   */
  state(nodeAddress: string, eip: string, vmi: string): Promise<DataplaneState | undefined>;
}

export interface Caches {
  binding(key: string): EipBinding | undefined;
  /** Every EipBinding (in any namespace) whose spec names this EIP. */
  bindingsNamingEip(eip: string): EipBinding[];
  vmi(namespace: string, name: string): Vmi | undefined;
  node(name: string): KubeNode | undefined;
  allNodes(): Iterable<KubeNode>;
}

export interface BindingWriter {
  /** `conditional`: fails on a conflict if the object changed since `binding` was read. */
  patchStatus(
    binding: EipBinding,
    status: EipBindingStatus,
    options?: { conditional?: boolean },
  ): Promise<void>;
  /** Sets metadata.finalizers, failing on a conflict (the object changed meanwhile). */
  setFinalizers(binding: EipBinding, finalizers: string[]): Promise<void>;
}

export interface Recorder {
  record(
    binding: EipBinding,
    type: "Normal" | "Warning",
    reason: string,
    action: string,
    note: string,
  ): void;
}

export interface ReconcilerDeps {
  readonly caches: Caches;
  readonly agents: AgentCalls;
  readonly writer: BindingWriter;
  readonly events: Recorder;
  readonly logger: Logger;
  readonly now?: () => Date;
  /** How long a deletion waits for the agent of a NotReady node (default 5 minutes). */
  readonly nodeNotReadyGraceMs?: number;
  /** The EipPools: fences, limits and allocation (none: every binding names its EIP). */
  readonly pools?: PoolChecks;
  /** How the wait for an agent's read-back sleeps (tests pass a fake). */
  readonly sleep?: (ms: number) => Promise<void>;
}

export const DEFAULT_NODE_NOT_READY_GRACE_MS = 5 * 60_000;

/**
 * How long a reconcile waits after a bind for the agent's read-back of it (which follows
 * the apply at once); past it the status says what is known and anti-entropy updates it.
 */
const READ_BACK_WAIT_MS = 3000;

/** Both conditions Unknown, for the same reason. */
export function dataplaneUnknown(reason: string, message: string): DataplaneState {
  const c = { status: "Unknown" as const, reason, message };
  return { programmed: c, announced: c };
}

function awaitingReadBack(d: DataplaneState): boolean {
  return d.programmed.reason === "NotReadBack" || d.announced.reason === "NotReadBack";
}

/** Thrown to have the key retried with backoff; the status already says why. */
export class RetryLater extends Error {
  override name = "RetryLater";
}

export interface Applied {
  readonly eip: string;
  readonly node: string;
  readonly vmiAddress: string;
}

function appliedOf(b: EipBinding): Applied | undefined {
  const s = b.status;
  return s?.eipAddr && s.nodeName && s.vmiAddress
    ? { eip: s.eipAddr, node: s.nodeName, vmiAddress: s.vmiAddress }
    : undefined;
}

function describe(a: Applied): string {
  return `${a.eip} -> ${a.vmiAddress} on ${a.node}`;
}

export class Reconciler {
  constructor(private readonly deps: ReconcilerDeps) {}

  async reconcile(key: string): Promise<void> {
    const cached = this.deps.caches.binding(key);
    if (!cached) return; // gone: its finalizer made sure it was unbound first
    if (cached.metadata.deletionTimestamp) return this.finalize(cached);
    const pooled = await this.deps.pools?.check(cached);
    // Allocated: the address and our finalizer are written; go on with that object.
    const binding = pooled?.kind === "allocated" ? pooled.binding : cached;
    const finalizers = binding.metadata.finalizers ?? [];
    if (!finalizers.includes(FINALIZER)) {
      // Before anything is bound: a deletion must always find the finalizer.
      await this.deps.writer.setFinalizers(binding, [...finalizers, FINALIZER]);
    }
    const applied = appliedOf(binding);
    if (pooled?.kind === "refuse") {
      return this.settle(binding, applied, { reason: pooled.reason, message: pooled.message });
    }
    const eip = canonicalIpv4(binding.spec.eipAddr ?? "") ?? binding.spec.eipAddr ?? "";
    const ns = binding.metadata.namespace ?? "";
    const decision = decide(binding, this.deps.caches.vmi(ns, binding.spec.vmiName), (name) =>
      this.deps.caches.node(name),
    );
    // Before any agent call, and again at every pass: a Node may gain the address later.
    const invalid = eipProblem(
      eip,
      this.deps.caches.allNodes(),
      decision.kind === "place" ? decision.placement.vmiAddress : undefined,
    );
    if (invalid) {
      const said = binding.status?.conditions?.find((c) => c.type === "Ready");
      if (said?.reason !== Reason.InvalidEip || said.message !== invalid) {
        this.deps.events.record(binding, "Warning", Reason.InvalidEip, "Bind", invalid);
      }
      return this.settle(binding, applied, { reason: Reason.InvalidEip, message: invalid });
    }
    const owner = ownerOf(eip, this.deps.caches.bindingsNamingEip(eip));
    if (owner && keyOf(owner.metadata) !== key) {
      const message = `EIP ${eip} is held by the older EipBinding ${keyOf(owner.metadata)}`;
      return this.settle(binding, applied, { reason: Reason.EipConflict, message });
    }
    if (decision.kind === "unplace") {
      return this.settle(binding, applied, { reason: decision.reason, message: decision.message });
    }
    return this.place(binding, applied, decision.placement);
  }

  /** Not to be applied: take back what it holds, then say why. */
  private async settle(
    binding: EipBinding,
    applied: Applied | undefined,
    why: { reason: Reason; message: string },
  ): Promise<void> {
    if (applied) {
      const r = await this.unbindApplied(applied);
      if (!r.ok) {
        await this.write(binding, {
          applied,
          ready: false,
          reason: why.reason,
          message: `${why.message}; unbinding ${describe(applied)} failed: ${r.reason}`,
        });
        this.deps.events.record(binding, "Warning", "UnbindFailed", "Unbind", r.reason);
        throw new RetryLater(r.reason);
      }
      this.deps.events.record(
        binding,
        "Normal",
        "Unbound",
        "Unbind",
        `${describe(applied)}: ${why.message}`,
      );
    }
    await this.write(binding, { applied: undefined, ready: false, ...why });
  }

  private async place(binding: EipBinding, applied: Applied | undefined, p: Placement) {
    const want: Applied = { eip: p.eip, node: p.node, vmiAddress: p.vmiAddress };
    const moved = applied !== undefined && applied.node !== p.node;
    const changedHere =
      applied !== undefined &&
      !moved &&
      (applied.eip !== p.eip || applied.vmiAddress !== p.vmiAddress);
    // On the same node the agent refuses an EIP or VMI that is bound otherwise: unbind the
    // old pair first. Across nodes the new node binds first, so the EIP is never nowhere.
    if (changedHere) {
      const r = await this.unbindApplied(applied);
      if (!r.ok)
        return this.failed(binding, applied, r, "Unbind", `unbinding ${describe(applied)}`);
    }
    const bound = await this.deps.agents.bind(p.nodeAddress, p.eip, p.vmiAddress);
    if (!bound.ok) {
      return this.failed(
        binding,
        changedHere ? undefined : applied,
        bound,
        "Bind",
        `binding ${describe(want)}`,
      );
    }
    if (moved) {
      const r = await this.unbindApplied(applied);
      if (!r.ok) {
        // The old node's agent is unreachable (often why the VMI moved): do not hold the
        // binding hostage. Anti-entropy removes the leftover when that agent answers again.
        this.deps.events.record(
          binding,
          "Warning",
          "UnbindFailed",
          "Unbind",
          `moved to ${p.node}, but unbinding from ${applied.node} failed: ${r.reason}; it is retried when that agent answers`,
        );
      }
      this.deps.events.record(
        binding,
        "Normal",
        "Moved",
        "Bind",
        `moved from ${applied.node}: ${describe(want)}`,
      );
    } else if (!applied || changedHere) {
      this.deps.events.record(binding, "Normal", "Bound", "Bind", describe(want));
    }
    await this.write(binding, {
      applied: want,
      ready: true,
      reason: Reason.Bound,
      message: boundMessage(binding, want),
      dataplane: await this.readBack(p.nodeAddress, want),
    });
  }

  /** The agent's read-back of a binding it just bound (waits a little for it). */
  private async readBack(address: string, a: Applied): Promise<DataplaneState> {
    const sleep = this.deps.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
    let waited = 0;
    for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
      let state: DataplaneState | undefined;
      try {
        state = await this.deps.agents.state(address, a.eip, a.vmiAddress);
      } catch (err) {
        return dataplaneUnknown(
          Reason.AgentUnavailable,
          `asking the agent on ${a.node} what it read back failed: ${(err as Error).message}`,
        );
      }
      if (state === undefined) {
        return dataplaneUnknown("NotHeld", `the agent on ${a.node} no longer lists ${describe(a)}`);
      }
      if (!awaitingReadBack(state) || waited >= READ_BACK_WAIT_MS) return state;
      await sleep(delay);
      waited += delay;
    }
  }

  private async failed(
    binding: EipBinding,
    applied: Applied | undefined,
    r: Exclude<AgentResult, { ok: true }>,
    action: string,
    what: string,
  ): Promise<never> {
    const reason = r.unreachable ? Reason.AgentUnavailable : Reason.AgentRefused;
    const message = `${what}: ${r.reason}`;
    await this.write(binding, {
      applied,
      ready: false,
      reason,
      message,
      ...(r.unreachable ? { dataplane: dataplaneUnknown(reason, message) } : {}),
    });
    this.deps.events.record(binding, "Warning", reason, action, message);
    throw new RetryLater(message);
  }

  /**
   * Deleting: unbind, then let the object go (our finalizer and the seed's). An unreachable
   * agent delays it, visibly, unless its node is gone or NotReady past the grace period; an
   * agent that refuses the unbind but does not hold the pair has nothing left to take back.
   */
  private async finalize(binding: EipBinding): Promise<void> {
    const finalizers = binding.metadata.finalizers ?? [];
    const ours = (f: string) => f === FINALIZER || f === SEED_FINALIZER;
    if (!finalizers.some(ours)) return;
    const applied = appliedOf(binding) ?? this.seedApplied(binding);
    if (applied) {
      const r = await this.unbindApplied(applied);
      const gone = r.ok ? undefined : await this.nothingToWaitFor(applied, r);
      if (gone) {
        this.deps.events.record(binding, "Warning", gone.reason, "Unbind", gone.message);
      } else if (!r.ok) {
        const message = `deletion waits for unbinding ${describe(applied)}: ${r.reason}`;
        await this.write(binding, { applied, ready: false, reason: Reason.Unbinding, message });
        this.deps.events.record(binding, "Warning", "UnbindFailed", "Unbind", message);
        throw new RetryLater(message);
      } else {
        this.deps.events.record(
          binding,
          "Normal",
          "Unbound",
          "Unbind",
          `${describe(applied)}: deleted`,
        );
      }
    }
    await this.deps.writer.setFinalizers(
      binding,
      finalizers.filter((f) => !ours(f)),
    );
  }

  /**
   * A binding the seed's operator made has no status: where it was bound is where its VMI
   * is now, if placed (the seed also kept it in spec, which we do not trust).
   */
  private seedApplied(binding: EipBinding): Applied | undefined {
    if (binding.status?.observedGeneration !== undefined) return undefined;
    const ns = binding.metadata.namespace ?? "";
    const d = decide(binding, this.deps.caches.vmi(ns, binding.spec.vmiName), (name) =>
      this.deps.caches.node(name),
    );
    return d.kind === "place"
      ? { eip: d.placement.eip, node: d.placement.node, vmiAddress: d.placement.vmiAddress }
      : undefined;
  }

  /** Why a failed unbind need not hold a deletion back, or undefined when it must. */
  private async nothingToWaitFor(
    applied: Applied,
    r: Exclude<AgentResult, { ok: true }>,
  ): Promise<{ reason: string; message: string } | undefined> {
    const node = this.deps.caches.node(applied.node);
    const address = node ? nodeAddress(node) : undefined;
    if (!node || !address) return undefined; // unbindApplied answered ok then
    if (!r.unreachable) {
      try {
        const held = await this.deps.agents.list(address);
        if (!held.some((h) => h.eip === applied.eip && h.vmi === applied.vmiAddress)) {
          return {
            reason: "NotHeld",
            message: `deleted: agent on ${applied.node} does not hold ${applied.eip} -> ${applied.vmiAddress} (${r.reason})`,
          };
        }
      } catch {
        // Not asked: wait as for any failed unbind.
      }
    }
    const since = notReadySince(node);
    const grace = this.deps.nodeNotReadyGraceMs ?? DEFAULT_NODE_NOT_READY_GRACE_MS;
    const now = (this.deps.now?.() ?? new Date()).getTime();
    if (since !== undefined && now - since >= grace) {
      return {
        reason: "NodeNotReady",
        message: `deleted without unbinding ${describe(applied)}: node ${applied.node} is NotReady since ${new Date(since).toISOString()} (grace ${grace / 1000}s); anti-entropy unbinds it there when the agent answers again (${r.reason})`,
      };
    }
    return undefined;
  }

  private async unbindApplied(applied: Applied): Promise<AgentResult> {
    const node = this.deps.caches.node(applied.node);
    const address = node ? nodeAddress(node) : undefined;
    if (!address) {
      // The node is gone (or has no address): so is its agent, and with it the binding.
      this.deps.logger.warn(
        { node: applied.node, eip: applied.eip },
        "node gone: nothing to unbind there",
      );
      return { ok: true };
    }
    return this.deps.agents.unbind(address, applied.eip, applied.vmiAddress);
  }

  private async write(binding: EipBinding, outcome: Outcome): Promise<void> {
    await writeStatus(this.deps, binding, outcome);
  }
}

/** The Ready message of a bound binding. */
export function boundMessage(binding: EipBinding, a: Applied): string {
  return `EIP ${a.eip} is bound to VMI ${binding.spec.vmiName} (${a.vmiAddress}) on ${a.node}`;
}

/** Writes the status the outcome makes, if it changes anything, with its dataplane Events. */
export async function writeStatus(
  deps: Pick<ReconcilerDeps, "writer" | "events" | "now">,
  binding: EipBinding,
  outcome: Outcome,
  options: { conditional?: boolean } = {},
): Promise<boolean> {
  const next = nextStatus(binding, outcome, (deps.now?.() ?? new Date()).toISOString());
  if (sameStatus(binding.status, next)) return false;
  await deps.writer.patchStatus(binding, next, options);
  for (const e of dataplaneEvents(binding.status, next)) {
    deps.events.record(binding, e.type, e.reason, "ReadBack", e.note);
  }
  return true;
}

/** When the node's Ready condition became not True (ms), or undefined if it is Ready or unknown. */
function notReadySince(node: KubeNode): number | undefined {
  const ready = node.status?.conditions?.find((c) => c.type === "Ready");
  if (!ready || ready.status === "True" || !ready.lastTransitionTime) return undefined;
  const t = Date.parse(ready.lastTransitionTime);
  return Number.isNaN(t) ? undefined : t;
}
