// The vm-bindings controller: keeps one EipBinding for each VirtualMachine or bare VMI whose
// annotation asks for an EIP (plan.ts decides; this creates and deletes). Only the leader
// runs it (it is built with the binding controller). It waits for its own caches (VMs,
// VMIs, EipBindings) before acting, so a missing VirtualMachine CRD or permission stops
// only this, never the bindings' reconciliation.
//
// What triggers a name: a VM or VMI added or deleted, or whose annotations, owner
// references, uid or deletion changed; an EipBinding added or deleted, or whose labels,
// owner references, vmiName, poolName or deletion changed (its own name and the VMI it
// names, before and after).
import type { Logger } from "pino";
import type { KubeObject } from "../../kube/informer.js";
import type { CacheEvent, KeyQueue, ObjectCache } from "../controller.js";
import type { EipBinding, ObjectMeta, Vmi } from "../types.js";
import { keyOf } from "../types.js";
import { type Requester, plan } from "./plan.js";
import { VmReason, type VirtualMachine } from "./types.js";

export interface VmBindingWriter {
  /** Creates the binding; one of its name existing already is not an error (re-planned). */
  create(binding: EipBinding): Promise<void>;
  /** Deletes exactly this binding (its uid); one already gone or replaced is not an error. */
  delete(binding: EipBinding): Promise<void>;
}

export interface EventSink {
  record(
    obj: KubeObject,
    type: "Normal" | "Warning",
    reason: string,
    action: string,
    note: string,
  ): void;
}

export interface VmBindingsDeps {
  readonly vms: ObjectCache<VirtualMachine>;
  readonly vmis: ObjectCache<Vmi>;
  readonly bindings: ObjectCache<EipBinding>;
  readonly queue: KeyQueue;
  readonly writer: VmBindingWriter;
  readonly events: EventSink;
  readonly logger: Logger;
  /** Default 2. */
  readonly workers?: number;
}

export class VmBindings {
  /** "namespace/vmiName" -> keys of the EipBindings naming that VMI. */
  private readonly byVmi = new Map<string, Set<string>>();
  private stopped = false;

  constructor(private readonly deps: VmBindingsDeps) {
    deps.vms.onEvent((ev) => this.onOwner(ev));
    deps.vmis.onEvent((ev) => this.onOwner(ev));
    deps.bindings.onEvent((ev) => this.onBinding(ev));
  }

  get synced(): boolean {
    const { vms, vmis, bindings } = this.deps;
    return vms.synced && vmis.synced && bindings.synced;
  }

  /** Waits for the caches, then runs the workers until stop(). */
  async run(): Promise<void> {
    while (!this.synced) {
      if (this.stopped) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    this.deps.logger.info({ vms: this.deps.vms.list().length }, "vm-bindings: caches synced");
    // Every name that may need something, whatever arrived before the caches were whole.
    for (const o of [...this.deps.vms.list(), ...this.deps.vmis.list()]) {
      this.deps.queue.add(keyOf(o.metadata));
    }
    for (const b of this.deps.bindings.list()) this.deps.queue.add(keyOf(b.metadata));
    const workers = Array.from({ length: this.deps.workers ?? 2 }, () => this.worker());
    await Promise.all(workers);
  }

  stop(): void {
    this.stopped = true;
  }

  private onOwner(ev: CacheEvent<VirtualMachine | Vmi>): void {
    if (ev.type === "modified" && ev.old && ownerView(ev.old) === ownerView(ev.obj)) return;
    this.deps.queue.add(ev.key);
  }

  private onBinding(ev: CacheEvent<EipBinding>): void {
    const vmiKey = (b: EipBinding) => `${b.metadata.namespace ?? ""}/${b.spec.vmiName}`;
    if (ev.old) this.index(vmiKey(ev.old), ev.key, false);
    if (ev.type === "deleted") this.index(vmiKey(ev.obj), ev.key, false);
    else this.index(vmiKey(ev.obj), ev.key, true);
    if (ev.type === "modified" && ev.old && bindingView(ev.old) === bindingView(ev.obj)) return;
    this.deps.queue.add(ev.key);
    this.deps.queue.add(vmiKey(ev.obj));
    if (ev.old) this.deps.queue.add(vmiKey(ev.old));
  }

  private index(vmi: string, key: string, add: boolean): void {
    const set = this.byVmi.get(vmi) ?? new Set<string>();
    if (add) set.add(key);
    else set.delete(key);
    if (set.size === 0) this.byVmi.delete(vmi);
    else this.byVmi.set(vmi, set);
  }

  private async worker(): Promise<void> {
    const { queue, logger } = this.deps;
    for (;;) {
      const key = await queue.get();
      if (key === undefined || this.stopped) return;
      try {
        await this.reconcile(key);
        queue.forget(key);
      } catch (err) {
        logger.warn({ key, err: (err as Error).message }, "vm-bindings: failed; retrying");
        queue.addRateLimited(key);
      } finally {
        queue.done(key);
      }
    }
  }

  /** Plans one namespace/name and carries the plan out. */
  async reconcile(key: string): Promise<void> {
    const { vms, vmis, bindings, writer, logger } = this.deps;
    const slash = key.indexOf("/");
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    const action = plan({
      namespace,
      name,
      vm: vms.get(key),
      vmi: vmis.get(key),
      named: bindings.get(key),
      forVmi: [...(this.byVmi.get(key) ?? [])].flatMap((k) => bindings.get(k) ?? []),
    });
    switch (action.kind) {
      case "none":
        return;
      case "create": {
        await this.reported(action.requester, "create", () => writer.create(action.binding));
        const pool = action.binding.spec.poolName;
        const note = `EipBinding ${name} created for an EIP from ${pool ? `EipPool ${pool}` : "the default pool"}`;
        logger.info({ key, owner: action.requester.kind }, `vm-bindings: ${note}`);
        this.record(action.requester, "Normal", VmReason.Created, "CreateEipBinding", note);
        return;
      }
      case "delete": {
        await this.reported(action.requester, "delete", () => writer.delete(action.binding));
        const note = `EipBinding ${name} deleted: ${action.why}`;
        logger.info({ key }, `vm-bindings: ${note}`);
        if (action.requester) {
          this.record(action.requester, "Normal", VmReason.Deleted, "DeleteEipBinding", note);
        }
        return;
      }
      case "report": {
        const normal = action.reason === VmReason.UserBinding;
        this.record(
          action.requester,
          normal ? "Normal" : "Warning",
          action.reason,
          "RequestEip",
          action.message,
        );
        return;
      }
    }
  }

  /** A write that failed is a Warning on the requester too (and retried by the caller). */
  private async reported(
    requester: Requester | undefined,
    what: "create" | "delete",
    write: () => Promise<void>,
  ): Promise<void> {
    try {
      await write();
    } catch (err) {
      if (requester) {
        const note = `could not ${what} EipBinding ${requester.object.metadata.name}: ${(err as Error).message}; retrying`;
        this.record(requester, "Warning", VmReason.Failed, "RequestEip", note);
      }
      throw err;
    }
  }

  private record(
    r: Requester,
    type: "Normal" | "Warning",
    reason: string,
    action: string,
    note: string,
  ): void {
    const obj = r.object as KubeObject;
    this.deps.events.record(
      { ...obj, apiVersion: obj.apiVersion ?? "kubevirt.io/v1", kind: r.kind },
      type,
      reason,
      action,
      note,
    );
  }
}

/** What of a VM or VMI the plan reads. */
function ownerView(o: { metadata: ObjectMeta; spec?: unknown }): string {
  const m = o.metadata;
  const template = (o as VirtualMachine).spec?.template?.metadata?.annotations;
  return JSON.stringify([m.uid, m.deletionTimestamp, m.annotations, m.ownerReferences, template]);
}

/** What of an EipBinding the plan reads. */
function bindingView(b: EipBinding): string {
  const m = b.metadata;
  return JSON.stringify([
    m.uid,
    m.deletionTimestamp,
    m.labels,
    m.ownerReferences,
    b.spec.vmiName,
    b.spec.poolName,
  ]);
}
