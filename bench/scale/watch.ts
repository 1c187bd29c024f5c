// The scale benchmark's view of the bindings: the operator's own informer in the bench's
// process, stamping each binding's first allocated address (spec.eipAddr appearing on a
// binding created without one) and its first Ready=True as the events arrive.
import { pino } from "pino";
import { EIPBINDINGS, type KubeClient } from "../../src/kube/client.js";
import { Informer } from "../../src/kube/informer.js";
import type { EipBinding } from "../../src/operator/types.js";
import { now } from "../common.js";
import { NAMESPACE } from "./cluster.js";

export class BindingWatch {
  readonly firstReady = new Map<string, number>();
  readonly firstAddress = new Map<string, number>();
  private readonly informer: Informer<EipBinding>;

  constructor(client: KubeClient) {
    this.informer = new Informer<EipBinding>(client, EIPBINDINGS, {
      namespace: NAMESPACE,
      name: "scale-bench",
      logger: pino({ level: "warn" }),
    });
    this.informer.onEvent((ev) => {
      if (ev.type === "deleted") return;
      const t = now();
      const name = ev.obj.metadata.name;
      if (ev.obj.spec.eipAddr && !this.firstAddress.has(name)) this.firstAddress.set(name, t);
      const ready = ev.obj.status?.conditions?.some(
        (c) => c.type === "Ready" && c.status === "True",
      );
      if (ready && !this.firstReady.has(name)) this.firstReady.set(name, t);
    });
  }

  async start(): Promise<void> {
    this.informer.start();
    await this.informer.waitForSync();
  }

  get restarts(): number {
    return this.informer.restarts;
  }

  list(): EipBinding[] {
    return this.informer.list();
  }

  async waitReady(n: number, timeoutMs: number): Promise<boolean> {
    const end = now() + timeoutMs;
    while (this.firstReady.size < n && now() < end) await new Promise((r) => setTimeout(r, 50));
    return this.firstReady.size >= n;
  }

  stop(): Promise<void> {
    return this.informer.stop();
  }
}
