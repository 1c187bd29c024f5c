// Assembles the operator: the API client, the informers, the work queue, the agent pool, the
// controller, leader election, Events, metrics and probes. Only the leader acts; a replica
// that loses the lease stops acting and exits (its Deployment restarts it as a standby).
import { hostname } from "node:os";
import type { Server } from "node:http";
import type { Logger } from "pino";
import { metricsRoute, probe, serve } from "../common/http.js";
import { EIPBINDINGS, KubeClient, NODES, VMIS } from "../kube/client.js";
import { loadKubeConfig, namespaceFromServiceAccount } from "../kube/config.js";
import { EventRecorder } from "../kube/events.js";
import { Informer } from "../kube/informer.js";
import { LeaderElector } from "../kube/leader.js";
import { WorkQueue } from "../kube/workqueue.js";
import { AgentPool } from "./agents.js";
import { watchAgentTls } from "./agent-tls.js";
import { nodeAddress } from "./placement.js";
import type { OperatorConfig } from "./config.js";
import { Controller } from "./controller.js";
import { OperatorMetrics } from "./metrics.js";
import { PoolGate } from "./pools/gate.js";
import { EIPPOOLS, NAMESPACES, poolWriter } from "./pools/kube.js";
import type { EipPool, Namespace } from "./pools/types.js";
import type { BindingWriter } from "./reconciler.js";
import { statusPatch } from "./status.js";
import type { EipBinding, KubeNode, Vmi } from "./types.js";
import { VmBindings } from "./vms/controller.js";
import { VIRTUALMACHINES, vmBindingWriter } from "./vms/kube.js";
import type { VirtualMachine } from "./vms/types.js";

export const CONTROLLER_NAME = "kube-eip.lucheng0127/eip-operator";

export interface RunningOperator {
  readonly healthPort: number | undefined;
  readonly metricsPort: number | undefined;
  /** Resolves when the operator stopped (a signal, or lost leadership: then `lostLease`). */
  readonly done: Promise<{ lostLease: boolean }>;
  stop(): Promise<void>;
}

export async function startOperator(
  config: OperatorConfig,
  logger: Logger,
): Promise<RunningOperator> {
  const metrics = new OperatorMetrics();
  const kubeconfig = loadKubeConfig({ kubeconfig: config.kubeconfig });
  const client = new KubeClient(kubeconfig, {
    userAgent: "eip-operator",
    onRequest: metrics.restClient(new URL(kubeconfig.server).host),
  });
  const identity = `${process.env["POD_NAME"] ?? hostname()}_${process.pid}`;
  const events = new EventRecorder(client, {
    controller: CONTROLLER_NAME,
    instance: identity,
    logger,
  });
  const writer: BindingWriter = {
    async patchStatus(b, status, options) {
      // With the resourceVersion the patch fails on a conflict: the object changed meanwhile.
      const patch = options?.conditional
        ? { ...statusPatch(status), metadata: { resourceVersion: b.metadata.resourceVersion } }
        : statusPatch(status);
      await client.patch(EIPBINDINGS, b.metadata.namespace, b.metadata.name, patch, {
        type: "merge",
        subresource: "status",
      });
    },
    async setFinalizers(b, finalizers) {
      // The resourceVersion makes it conditional: a concurrent change fails it (and retries).
      await client.patch(
        EIPBINDINGS,
        b.metadata.namespace,
        b.metadata.name,
        { metadata: { finalizers, resourceVersion: b.metadata.resourceVersion } },
        { type: "merge" },
      );
    },
  };
  const agents = new AgentPool({
    port: config.agentPort,
    timeoutMs: config.agentTimeoutMs,
    ...(config.agentTls ? { tls: config.agentTls } : {}),
  });

  const tlsWatch = config.agentTls
    ? watchAgentTls(config.agentTls, agents, logger, metrics)
    : undefined;

  let controller: Controller | undefined;
  let informers: {
    name: string;
    informer: Informer<EipBinding | Vmi | KubeNode | EipPool | Namespace | VirtualMachine>;
  }[] = [];
  let standby = config.leaderElect;
  const act = async (signal: AbortSignal) => {
    standby = false;
    metrics.leader.set(1);
    const bindings = new Informer<EipBinding>(client, EIPBINDINGS, { logger, name: "eipbindings" });
    const vmis = new Informer<Vmi>(client, VMIS, { logger, name: "virtualmachineinstances" });
    const nodes = new Informer<KubeNode>(client, NODES, { logger, name: "nodes" });
    const pools = new Informer<EipPool>(client, EIPPOOLS, { logger, name: "eippools" });
    const namespaces = new Informer<Namespace>(client, NAMESPACES, { logger, name: "namespaces" });
    const vms = new Informer<VirtualMachine>(client, VIRTUALMACHINES, {
      logger,
      name: "virtualmachines",
    });
    // Which nodes have an address: asked at every agent call, so kept by address and made
    // again only after the nodes changed.
    let byAddress: Map<string, string[]> | undefined;
    nodes.onEvent(() => {
      byAddress = undefined;
    });
    agents.setNodes((address) => {
      if (!byAddress) {
        byAddress = new Map();
        for (const n of nodes.list()) {
          const a = nodeAddress(n);
          if (a !== undefined) byAddress.set(a, [...(byAddress.get(a) ?? []), n.metadata.name]);
        }
      }
      return byAddress.get(address) ?? [];
    });
    informers = [
      { name: "eipbindings", informer: bindings },
      { name: "virtualmachineinstances", informer: vmis },
      { name: "nodes", informer: nodes },
      { name: "eippools", informer: pools },
      { name: "namespaces", informer: namespaces },
      { name: "virtualmachines", informer: vms },
    ] as typeof informers;
    const queue = new WorkQueue({ metrics: metrics.workQueue() });
    const gate = new PoolGate({
      pools,
      namespaces,
      bindings,
      nodes,
      writer: poolWriter(client),
      events,
      enqueue: (key) => queue.add(key),
      reserved: config.reservedAddresses,
      logger,
    });
    controller = new Controller({
      bindings,
      vmis,
      nodes,
      queue,
      agents,
      writer,
      events,
      metrics,
      logger,
      workers: config.workers,
      antiEntropyMs: config.antiEntropyMs,
      nodeNotReadyGraceMs: config.nodeNotReadyGraceMs,
      pools: gate,
    });
    // The EipBindings the annotations on VMs and VMIs ask for: its own queue, and it waits
    // for its own caches (the bindings' reconciliation never waits for the VMs).
    const vmQueue = new WorkQueue();
    const vmBindings = new VmBindings({
      vms,
      vmis,
      bindings,
      queue: vmQueue,
      writer: vmBindingWriter(client),
      events,
      logger,
    });
    for (const i of informers) {
      i.informer.onRestart(() => metrics.informerRestarts.inc({ resource: i.name }));
      i.informer.start();
    }
    signal.addEventListener("abort", () => {
      controller?.stop();
      vmBindings.stop();
      gate.stop();
      queue.shutdown();
      vmQueue.shutdown();
    });
    const vmsRun = vmBindings.run();
    await Promise.all(
      informers.filter((i) => i.informer !== vms).map((i) => i.informer.waitForSync(signal)),
    );
    logger.info(
      { bindings: bindings.list().length, vmis: vmis.list().length, nodes: nodes.list().length },
      "caches synced; reconciling",
    );
    await Promise.all([controller.run(), vmsRun]);
  };

  const readiness = () => {
    if (standby) return undefined; // a standby is ready to take over
    if (!controller) return "starting";
    return controller.synced ? undefined : "caches not synced yet";
  };
  const servers: Server[] = [];
  let healthPort: number | undefined;
  let metricsPort: number | undefined;
  if (config.healthAddress !== "0") {
    const s = await serve(config.healthAddress, {
      "/healthz": probe(() => undefined),
      "/readyz": probe(readiness),
    });
    servers.push(s.server);
    healthPort = s.port;
  }
  if (config.metricsAddress !== "0") {
    const route = metricsRoute(metrics.registry);
    const s = await serve(config.metricsAddress, {
      "/metrics": (req, res) => {
        metrics.bindings.reset();
        for (const [reason, n] of controller?.countByReason() ?? [])
          metrics.bindings.set({ reason }, n);
        (route["/metrics"] as NonNullable<(typeof route)["/metrics"]>)(req, res);
      },
    });
    servers.push(s.server);
    metricsPort = s.port;
  }

  const abort = new AbortController();
  let elector: LeaderElector | undefined;
  const done = (async (): Promise<{ lostLease: boolean }> => {
    if (!config.leaderElect) {
      await act(abort.signal);
      return { lostLease: false };
    }
    const namespace =
      config.leaderElectionNamespace ??
      process.env["POD_NAMESPACE"] ??
      namespaceFromServiceAccount() ??
      "kube-eip-system";
    let lost = false;
    let acting: Promise<void> | undefined;
    const leadership = new AbortController();
    elector = new LeaderElector(
      client,
      {
        namespace,
        name: config.leaderElectionId,
        identity,
        leaseDurationSec: 15,
        renewDeadlineSec: 10,
        retryPeriodSec: 2,
        logger,
      },
      {
        onStartedLeading: (signal) => {
          logger.info({ identity, lease: `${namespace}/${config.leaderElectionId}` }, "leading");
          acting = act(signal);
        },
        onStoppedLeading: () => {
          metrics.leader.set(0);
          if (!abort.signal.aborted) {
            lost = true;
            logger.error({ identity }, "lost the lease: stopping");
          }
          leadership.abort();
        },
        onNewLeader: (leader) => {
          if (leader !== identity) logger.info({ leader }, "standing by; another replica leads");
        },
      },
    );
    abort.signal.addEventListener("abort", () => leadership.abort());
    void elector.run();
    await new Promise<void>((resolve) =>
      leadership.signal.addEventListener("abort", () => resolve()),
    );
    await acting?.catch(() => {});
    return { lostLease: lost };
  })();

  return {
    healthPort,
    metricsPort,
    done,
    async stop() {
      controller?.stop();
      abort.abort();
      await elector?.stop();
      await Promise.all(informers.map((i) => i.informer.stop()));
      for (const s of servers) s.close();
      tlsWatch?.stop();
      agents.close();
      client.close();
    },
  };
}
