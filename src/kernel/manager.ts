// What every kernel subsystem manager (ipset, iptables, ip rule/route/address) offers the
// agent's apply loop. A manager owns a part of the kernel's state, keeps its own belief of
// what the kernel holds, and writes only the difference from what it is asked to hold, in
// one batch. Managers are not safe for concurrent use: the apply loop is their only caller,
// except that read() may run beside it. A manager updates its belief in place after each
// write, so the JavaScript cost of an apply follows what changed, not what is held.

/** The seed's errPhase numbers: which step of a binding failed. */
export const Phase = {
  Ipset: 1,
  Nat: 2,
  PolicyRouting: 3,
  Address: 4,
  Bgp: 5,
  State: 6,
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

export class KernelError extends Error {
  constructor(
    readonly phase: Phase,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "KernelError";
  }
}

/**
 * `D` is the desired state; `S` is the manager's snapshot of the kernel, an opaque value that
 * only read() produces and only adopt() consumes.
 */
export interface KernelManager<D, S = unknown> {
  /** Sets what the kernel must hold. Cheap: nothing is written until apply(). */
  setDesired(desired: D): void;
  /**
   * Writes the difference between the desired state and what the manager believes the
   * kernel holds. With `reread`, or when its belief is unknown (first call, or after a
   * failure), it first reads the kernel. Resolves to the number of changes written; rejects
   * with a KernelError carrying the phase that failed.
   */
  apply(options: { reread: boolean }): Promise<number>;
  /**
   * Reads what the kernel holds now (the part of it the current desired state names). Does
   * not touch the manager's belief; may run while apply() runs (the caller decides whether
   * the result is still valid). Rejects with a KernelError, like apply().
   */
  read(): Promise<S>;
  /**
   * Takes a snapshot returned by read() as the belief; the next apply({reread:false}) diffs
   * against it. Cheap: read() already built that belief. The snapshot itself is never
   * changed, so it may be adopted again (at the cost of building the belief anew).
   */
  adopt(snapshot: S): void;
}
