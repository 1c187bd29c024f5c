// The operator's handle on the node agents: one gRPC channel per {node, address}, reused;
// on TLS each channel accepts only that node's agent certificate (agent-identity.ts).
// Answers are mapped to what the reconciler needs to know (done, refused with a reason, or
// not reachable).
import {
  AgentClient,
  type BindingConditionInfo,
  type BindingInfo,
  type TlsFiles,
} from "../common/agent-api.js";
import type { DataplaneCondition, DataplaneState } from "./types.js";
import { agentCheck } from "./agent-identity.js";
import type { AgentResult } from "./reconciler.js";

export interface AgentPoolOptions {
  readonly port: number;
  readonly tls?: TlsFiles;
  readonly timeoutMs: number;
}

/** The names of the nodes whose InternalIP is this address. */
export type NodesAt = (address: string) => readonly string[];

export interface HeldBinding {
  readonly eip: string;
  readonly vmi: string;
  /** What the agent read back for it. */
  readonly state: DataplaneState;
}

const STATUSES = new Set(["True", "False", "Unknown"]);

/** A condition as the agent sent it; Unknown from an agent too old to read back. */
function conditionOf(c: BindingConditionInfo | null | undefined): DataplaneCondition {
  if (!c || !STATUSES.has(c.status)) {
    return {
      status: "Unknown",
      reason: "NotReported",
      message: "the agent does not report what it read back (an older agent)",
    };
  }
  return { status: c.status as DataplaneCondition["status"], reason: c.reason, message: c.message };
}

function heldOf(b: BindingInfo): HeldBinding {
  return {
    eip: b.eipAddr,
    vmi: b.vmiAddr,
    state: { programmed: conditionOf(b.programmed), announced: conditionOf(b.announced) },
  };
}

export class AgentPool {
  /** By `${node} ${address}`. */
  private readonly clients = new Map<string, { address: string; client: AgentClient }>();
  private nodesAt: NodesAt = () => [];

  constructor(private readonly opts: AgentPoolOptions) {}

  /** Tells the pool which node an address belongs to (the node informer). */
  setNodes(nodesAt: NodesAt): void {
    this.nodesAt = nodesAt;
  }

  private client(address: string): AgentClient {
    const { tls } = this.opts;
    let node = "";
    if (tls) {
      const names = this.nodesAt(address);
      if (names.length !== 1) {
        throw new Error(
          names.length === 0
            ? `no node has InternalIP ${address}: no agent identity to expect`
            : `nodes ${names.join(", ")} share InternalIP ${address}: cannot tell which agent should answer`,
        );
      }
      node = names[0] as string;
    }
    const key = `${node} ${address}`;
    let c = this.clients.get(key);
    if (!c) {
      const client = new AgentClient(`${address}:${this.opts.port}`, {
        ...(tls ? { tls, checkServer: agentCheck(node, address) } : {}),
      });
      c = { address, client };
      this.clients.set(key, c);
    }
    return c.client;
  }

  bind(address: string, eip: string, vmi: string): Promise<AgentResult> {
    return this.operate(address, "bind", eip, vmi);
  }

  unbind(address: string, eip: string, vmi: string): Promise<AgentResult> {
    return this.operate(address, "unbind", eip, vmi);
  }

  /** What the agent holds; rejects when it cannot be asked. */
  async list(address: string): Promise<HeldBinding[]> {
    const rsp = await this.client(address).listBindings(this.opts.timeoutMs);
    return rsp.bindings.map(heldOf);
  }

  /**
   * What the agent read back for the binding of `eip`, if it holds it with `vmi`; rejects
   * when it cannot be asked. (An agent too old for the filter lists all: it is applied here.)
   */
  async state(address: string, eip: string, vmi: string): Promise<DataplaneState | undefined> {
    const rsp = await this.client(address).listBindings(this.opts.timeoutMs, { eipAddr: eip });
    const b = rsp.bindings.find((x) => x.eipAddr === eip && x.vmiAddr === vmi);
    return b ? heldOf(b).state : undefined;
  }

  /**
   * The TLS files were renewed: new calls go through new channels, which read them; the
   * old channels are closed once any call in flight on them has had its deadline.
   */
  renewTls(): void {
    const old = [...this.clients.values()];
    this.clients.clear();
    setTimeout(() => {
      for (const c of old) c.client.close();
    }, this.opts.timeoutMs + 1000).unref();
  }

  /** Closes the channels of addresses no longer in use. */
  retain(addresses: ReadonlySet<string>): void {
    for (const [key, c] of this.clients) {
      if (!addresses.has(c.address)) {
        c.client.close();
        this.clients.delete(key);
      }
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.client.close();
    this.clients.clear();
  }

  private async operate(
    address: string,
    action: "bind" | "unbind",
    eip: string,
    vmi: string,
  ): Promise<AgentResult> {
    try {
      const rsp = await this.client(address).eipOperate(
        { action, eipAddr: eip, vmiAddr: vmi },
        this.opts.timeoutMs,
      );
      if (rsp.result === "Succeed") return { ok: true };
      const phase = rsp.errPhase > 0 ? ` (errPhase ${rsp.errPhase})` : "";
      return {
        ok: false,
        unreachable: false,
        reason: `agent ${address} answered ${action} Failed${phase}: ${rsp.reason || "no reason given"}`,
      };
    } catch (err) {
      const e = err as { details?: string; message?: string };
      return {
        ok: false,
        unreachable: true,
        reason: `agent ${address}:${this.opts.port} unreachable: ${e.details || e.message || String(err)}`,
      };
    }
  }
}
