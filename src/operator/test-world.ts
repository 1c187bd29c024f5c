// A fake world for the reconciler's unit tests: caches, agents (by node address: EIP -> VMI
// address) and API writes, each call recorded in order.
import { pino } from "pino";
import type { PoolChecks } from "./pools/gate.js";
import { type AgentResult, type BindingWriter, type Caches, Reconciler } from "./reconciler.js";
import type { DataplaneState, EipBinding, EipBindingStatus, KubeNode, Vmi } from "./types.js";
import { keyOf } from "./types.js";

/** What an agent reads back for a binding that is whole. */
export const PROGRAMMED: DataplaneState = {
  programmed: { status: "True", reason: "ReadBack", message: "read back" },
  announced: { status: "True", reason: "Announced", message: "sent to 10.1.0.1" },
};

export class World implements Caches, BindingWriter {
  readonly bindings = new Map<string, EipBinding>();
  readonly vmis = new Map<string, Vmi>();
  readonly nodes = new Map<string, KubeNode>();
  /** What each agent (by node address) holds: eip -> vmi. */
  readonly agents = new Map<string, Map<string, string>>();
  readonly down = new Set<string>();
  /** What the agents read back, by "address eip"; True and True when not set. */
  readonly dataplane = new Map<string, DataplaneState>();
  readonly calls: string[] = [];
  readonly events: string[] = [];

  binding(key: string) {
    return this.bindings.get(key);
  }
  bindingsNamingEip(eip: string) {
    return [...this.bindings.values()].filter((b) => b.spec.eipAddr === eip);
  }
  vmi(ns: string, name: string) {
    return this.vmis.get(`${ns}/${name}`);
  }
  node(name: string) {
    return this.nodes.get(name);
  }
  allNodes() {
    return this.nodes.values();
  }
  async patchStatus(b: EipBinding, status: EipBindingStatus) {
    this.calls.push(`status ${keyOf(b.metadata)} ${status.conditions?.at(-1)?.reason}`);
    const cur = this.bindings.get(keyOf(b.metadata));
    if (cur) this.bindings.set(keyOf(b.metadata), { ...cur, status });
  }
  async setFinalizers(b: EipBinding, finalizers: string[]) {
    const cur = this.bindings.get(keyOf(b.metadata));
    if (!cur) return;
    if (cur.metadata.deletionTimestamp && finalizers.length === 0) {
      this.bindings.delete(keyOf(b.metadata));
      return;
    }
    this.bindings.set(keyOf(b.metadata), { ...cur, metadata: { ...cur.metadata, finalizers } });
  }
  /** The agents' ListBindings. */
  async list(address: string) {
    this.calls.push(`list ${address}`);
    if (this.down.has(address)) throw new Error("unreachable");
    return [...(this.agents.get(address) ?? new Map<string, string>())].map(([eip, vmi]) => ({
      eip,
      vmi,
      state: this.dataplane.get(`${address} ${eip}`) ?? PROGRAMMED,
    }));
  }
  /** The agents' ListBindings of one EIP (a read: not among the calls). */
  async state(address: string, eip: string, vmi: string) {
    if (this.down.has(address)) throw new Error("unreachable");
    if (this.agents.get(address)?.get(eip) !== vmi) return undefined;
    return this.dataplane.get(`${address} ${eip}`) ?? PROGRAMMED;
  }
  agentOp(op: "bind" | "unbind") {
    return async (address: string, eip: string, vmi: string): Promise<AgentResult> => {
      this.calls.push(`${op} ${address} ${eip} ${vmi}`);
      if (this.down.has(address)) return { ok: false, unreachable: true, reason: "unreachable" };
      const held = this.agents.get(address) ?? new Map<string, string>();
      this.agents.set(address, held);
      if (op === "bind") {
        if (held.has(eip) && held.get(eip) !== vmi) {
          return { ok: false, unreachable: false, reason: `EIP ${eip} is already bound` };
        }
        held.set(eip, vmi);
      } else if (held.has(eip) && held.get(eip) !== vmi) {
        // As the agent's table answers an unbind of a pair it does not hold.
        return {
          ok: false,
          unreachable: false,
          reason: `EIP ${eip} is bound to VMI ${held.get(eip)}, not ${vmi}`,
        };
      } else held.delete(eip);
      return { ok: true };
    };
  }
  addNode(name: string, address: string) {
    this.nodes.set(name, {
      metadata: { name },
      status: { addresses: [{ type: "InternalIP", address }] },
    });
  }
  setVmi(name: string, phase: string, node?: string, address?: string) {
    this.vmis.set(`default/${name}`, {
      metadata: { name, namespace: "default" },
      status: { phase, nodeName: node, interfaces: address ? [{ ipAddress: address }] : [] },
    });
  }
  addBinding(name: string, eip: string, vmi: string, created: string, finalizers: string[] = []) {
    this.bindings.set(`default/${name}`, {
      metadata: {
        name,
        namespace: "default",
        creationTimestamp: created,
        generation: 1,
        finalizers,
      },
      spec: { eipAddr: eip, vmiName: vmi },
    });
  }
  deleteBinding(name: string) {
    const b = this.bindings.get(`default/${name}`);
    if (!b) return;
    if ((b.metadata.finalizers ?? []).length === 0) this.bindings.delete(`default/${name}`);
    else {
      b.metadata.deletionTimestamp = "2026-01-01T00:00:00Z";
    }
  }
  ready(name: string) {
    return this.bindings
      .get(`default/${name}`)
      ?.status?.conditions?.find((c) => c.type === "Ready");
  }
}

/** A reconciler on the world, its Events recorded as "type reason", at a fixed time. */
export function reconcilerOn(
  w: World,
  opts: {
    now?: () => Date;
    nodeNotReadyGraceMs?: number;
    sleep?: (ms: number) => Promise<void>;
    pools?: PoolChecks;
  } = {},
): Reconciler {
  return new Reconciler({
    caches: w,
    agents: {
      bind: w.agentOp("bind"),
      unbind: w.agentOp("unbind"),
      list: (a) => w.list(a),
      state: (a, e, v) => w.state(a, e, v),
    },
    writer: w,
    events: { record: (_b, type, reason) => w.events.push(`${type} ${reason}`) },
    logger: pino({ level: "silent" }),
    now: opts.now ?? (() => new Date("2026-11-26T00:00:00Z")),
    ...(opts.sleep ? { sleep: opts.sleep } : {}),
    ...(opts.pools ? { pools: opts.pools } : {}),
    ...(opts.nodeNotReadyGraceMs !== undefined
      ? { nodeNotReadyGraceMs: opts.nodeNotReadyGraceMs }
      : {}),
  });
}
