// The operator's handle on the node agents: one gRPC channel per node address, reused, with
// the same TLS files for all; answers mapped to what the reconciler needs to know (done,
// refused with a reason, or not reachable).
import { AgentClient, type TlsFiles } from "../common/agent-api.js";
import type { AgentResult } from "./reconciler.js";

export interface AgentPoolOptions {
  readonly port: number;
  readonly tls?: TlsFiles;
  /** The name the agents' certificate carries (they are dialled by IP). */
  readonly serverName?: string;
  readonly timeoutMs: number;
}

export interface HeldBinding {
  readonly eip: string;
  readonly vmi: string;
}

export class AgentPool {
  private readonly clients = new Map<string, AgentClient>();

  constructor(private readonly opts: AgentPoolOptions) {}

  private client(address: string): AgentClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new AgentClient(`${address}:${this.opts.port}`, {
        ...(this.opts.tls ? { tls: this.opts.tls } : {}),
        ...(this.opts.serverName ? { serverName: this.opts.serverName } : {}),
      });
      this.clients.set(address, c);
    }
    return c;
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
    return rsp.bindings.map((b) => ({ eip: b.eipAddr, vmi: b.vmiAddr }));
  }

  /** Closes the channels of addresses no longer in use. */
  retain(addresses: ReadonlySet<string>): void {
    for (const [address, c] of this.clients) {
      if (!addresses.has(address)) {
        c.close();
        this.clients.delete(address);
      }
    }
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
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
