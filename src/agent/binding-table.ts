// The node's bindings in memory: one VMI per EIP and one EIP per VMI. It decides whether an
// operation conflicts and whether it changes anything; the apply loop makes it true.
import type { Binding } from "./plan.js";
import type { Operation } from "./request.js";

export interface HeldBinding extends Binding {
  /** When the binding was made on this node (ISO 8601). */
  readonly since: string;
}

/** One change, as the state journal records it. */
export type Change =
  | { readonly op: "bind"; readonly eip: string; readonly vmi: string; readonly since: string }
  | { readonly op: "unbind"; readonly eip: string; readonly vmi: string };

export type Outcome =
  | { readonly kind: "changed" }
  | { readonly kind: "unchanged" }
  | { readonly kind: "conflict"; readonly reason: string };

export class BindingTable {
  private readonly byEip = new Map<string, HeldBinding>();
  private readonly byVmi = new Map<string, HeldBinding>();
  /** Grows by one with every change, so a saver can tell whether it is behind. */
  private changes = 0;
  /** Changes not yet taken by the saver. */
  private log: Change[] = [];

  constructor(initial: Iterable<HeldBinding> = []) {
    for (const b of initial) this.put(b);
  }

  get size(): number {
    return this.byEip.size;
  }

  get version(): number {
    return this.changes;
  }

  /** The changes since the last call, oldest first. */
  takeChanges(): Change[] {
    const log = this.log;
    this.log = [];
    return log;
  }

  holdsEip(eip: string): boolean {
    return this.byEip.has(eip);
  }

  list(): HeldBinding[] {
    return [...this.byEip.values()];
  }

  /** Checks and, when allowed, performs the operation. `now` stamps new bindings. */
  apply(op: Operation, now: string): Outcome {
    const { eip, vmi } = op.binding;
    const atEip = this.byEip.get(eip);
    if (op.action === "bind") {
      if (atEip?.vmi === vmi) return { kind: "unchanged" };
      if (atEip) return conflict(`EIP ${eip} is already bound to VMI ${atEip.vmi}`);
      const atVmi = this.byVmi.get(vmi);
      if (atVmi) return conflict(`VMI ${vmi} already holds EIP ${atVmi.eip}`);
      this.put({ eip, vmi, since: now });
      this.changes++;
      this.log.push({ op: "bind", eip, vmi, since: now });
      return { kind: "changed" };
    }
    if (!atEip) return { kind: "unchanged" };
    if (atEip.vmi !== vmi) {
      return conflict(`EIP ${eip} is bound to VMI ${atEip.vmi}, not ${vmi}`);
    }
    this.byEip.delete(eip);
    this.byVmi.delete(vmi);
    this.changes++;
    this.log.push({ op: "unbind", eip, vmi });
    return { kind: "changed" };
  }

  private put(b: HeldBinding): void {
    this.byEip.set(b.eip, b);
    this.byVmi.set(b.vmi, b);
  }
}

function conflict(reason: string): Outcome {
  return { kind: "conflict", reason };
}
