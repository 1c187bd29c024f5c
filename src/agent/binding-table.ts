// The node's bindings in memory: one VMI per EIP and one EIP per VMI. It decides whether an
// operation conflicts and whether it changes anything; the apply loop makes it true.
//
// A change goes through two steps, so that the table holds only what is durable:
// propose() checks an operation against everything already wanted (the held bindings plus
// the changes proposed before it) and stages it; the apply loop takes the staged changes,
// saves them, and only then commit()s them; if the save fails it discard()s every staged
// change and the table is as before. list() and size are the held (saved) bindings only.
// A held binding is pending until an apply that includes it has succeeded (confirm()).
import type { Binding } from "../model/desired.js";
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

/** Bindings indexed both ways, with the version of the change that made each. */
class Bindings {
  readonly byEip = new Map<string, HeldBinding & { readonly version: number }>();
  readonly byVmi = new Map<string, HeldBinding>();

  constructor(from?: Bindings) {
    if (from) for (const b of from.byEip.values()) this.put(b, b.version);
  }

  put(b: HeldBinding, version: number): void {
    const held = { eip: b.eip, vmi: b.vmi, since: b.since, version };
    this.byEip.set(b.eip, held);
    this.byVmi.set(b.vmi, held);
  }

  /** Applies a change that was checked against these bindings. */
  apply(change: Change, version: number): void {
    if (change.op === "bind") {
      this.put(change, version);
      return;
    }
    this.byEip.delete(change.eip);
    this.byVmi.delete(change.vmi);
  }
}

export class BindingTable {
  /** Saved: what the node holds. */
  private held = new Bindings();
  /** Held plus the staged changes: what requests are checked against. */
  private wanted = new Bindings();
  /** Proposed and not yet taken by the saver, oldest first. */
  private staged: Change[] = [];
  /** Grows by one with every committed change, so the loop can tell what it applied. */
  private changes = 0;
  /** The version the last successful apply held. */
  private confirmed = -1;

  constructor(initial: Iterable<HeldBinding> = []) {
    for (const b of initial) this.held.put(b, 0);
    this.wanted = new Bindings(this.held);
  }

  get size(): number {
    return this.held.byEip.size;
  }

  get version(): number {
    return this.changes;
  }

  /** Whether the EIP is ours by record: held, or wanted by a change being saved. */
  holdsEip(eip: string): boolean {
    return this.held.byEip.has(eip) || this.wanted.byEip.has(eip);
  }

  list(): HeldBinding[] {
    return [...this.held.byEip.values()].map(({ eip, vmi, since }) => ({ eip, vmi, since }));
  }

  /** True while no successful apply has included this held binding yet. */
  isPending(eip: string): boolean {
    const b = this.held.byEip.get(eip);
    return b !== undefined && b.version > this.confirmed;
  }

  /** An apply of this version (and so of every binding held at it) succeeded. */
  confirm(version: number): void {
    this.confirmed = Math.max(this.confirmed, version);
  }

  /**
   * Checks the operation against what is wanted and, when it changes something, stages it
   * (the table changes at commit). `now` stamps new bindings.
   */
  propose(op: Operation, now: string): Outcome {
    const { eip, vmi } = op.binding;
    const atEip = this.wanted.byEip.get(eip);
    let change: Change;
    if (op.action === "bind") {
      if (atEip?.vmi === vmi) return { kind: "unchanged" };
      if (atEip) return conflict(`EIP ${eip} is already bound to VMI ${atEip.vmi}`);
      const atVmi = this.wanted.byVmi.get(vmi);
      if (atVmi) return conflict(`VMI ${vmi} already holds EIP ${atVmi.eip}`);
      change = { op: "bind", eip, vmi, since: now };
    } else {
      if (!atEip) return { kind: "unchanged" };
      if (atEip.vmi !== vmi) {
        return conflict(`EIP ${eip} is bound to VMI ${atEip.vmi}, not ${vmi}`);
      }
      change = { op: "unbind", eip, vmi };
    }
    this.wanted.apply(change, -1);
    this.staged.push(change);
    return { kind: "changed" };
  }

  /** The staged changes, oldest first, and the bindings held once they are committed. */
  takeStaged(): { changes: Change[]; after: HeldBinding[] } {
    const changes = this.staged;
    this.staged = [];
    const after = new Bindings(this.held);
    for (const c of changes) after.apply(c, 0);
    return {
      changes,
      after: [...after.byEip.values()].map(({ eip, vmi, since }) => ({ eip, vmi, since })),
    };
  }

  /** The changes taken by takeStaged() are saved: the table holds them. */
  commit(changes: readonly Change[]): void {
    for (const c of changes) this.held.apply(c, ++this.changes);
  }

  /** Saving failed: drops every change not committed, taken or still staged. */
  discard(): void {
    this.staged = [];
    this.wanted = new Bindings(this.held);
  }
}

function conflict(reason: string): Outcome {
  return { kind: "conflict", reason };
}
