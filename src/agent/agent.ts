// Assembles one node agent from its config: the saved bindings (or the seed's, on the first
// start after an upgrade), the kernel managers, the apply loop, the gRPC server and the
// metrics endpoint. Start order: the HTTP endpoint (metrics and probes: /readyz says
// "restoring" meanwhile), then restore the kernel state, then serve gRPC. Stopping
// leaves the kernel state in place, so EIP traffic keeps flowing while the agent restarts.
import { rm } from "node:fs/promises";
import type { Server as HttpServer } from "node:http";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { BgpAnnouncer } from "../bgp/announcer.js";
import { GobgpClient } from "../bgp/gobgp-api.js";
import { GobgpSpeaker, stopLeftoverSpeaker } from "../bgp/speaker.js";
import { metricsRoute, probe, serve } from "../common/http.js";
import { formatIpv4Net } from "../common/ipv4.js";
import type { IptablesMode } from "../kernel/iptables.js";
import { inspectIptablesBackends } from "../kernel/iptables-mode.js";
import { kernelSubsystems } from "../kernel/kernel-subsystems.js";
import { ensureRouteTableName } from "../kernel/rt-tables.js";
import { ConntrackCleaner, checkTcpLoose } from "../kernel/conntrack.js";
import { SysctlWriter } from "../kernel/sysctl.js";
import type { CommandRunner } from "../kernel/runner.js";
import { ArpArrivals } from "../kernel/arp-arrivals.js";
import { type Subsystem, announcing } from "../kernel/subsystem.js";
import { ArpAnnouncer } from "./arp-announcer.js";
import type { AgentConfig, BgpConfig } from "./config.js";
import { Dataplane } from "./dataplane.js";
import { GratuitousArp } from "./garp.js";
import { AgentMetrics } from "./metrics.js";
import { Authorizer } from "./authz.js";
import { ReloadingServerCredentials, readServerTls, watchServerTls } from "./server-tls.js";
import { NodeAddresses } from "./node-addresses.js";
import { ARP_ROUTE_PROTOCOL, ROUTE_TABLE_ID, ROUTE_TABLE_NAME } from "../model/desired.js";
import { type PlanConfig } from "../model/plan.js";
import { loadBindings, readKernelBindings } from "./recovery.js";
import { ReadBack } from "./readback.js";
import { AgentService, bindServer, buildGrpcServer, serverCredentials } from "./server.js";
import { BindingStore } from "./store.js";
import { IpsetTrafficReader, NftTrafficReader } from "../kernel/traffic.js";
import { TrafficMonitor } from "./traffic.js";

export interface RunningAgent {
  readonly grpcPort: number;
  readonly metricsPort: number | undefined;
  readonly dataplane: Dataplane;
  /** The gobgpd the agent runs, if any. */
  readonly speaker: GobgpSpeaker | undefined;
  stop(): Promise<void>;
}

export function planConfig(config: AgentConfig): PlanConfig {
  return {
    internalNets: config.internalNets.map(formatIpv4Net),
    gatewayIp: config.gatewayIp,
    gatewayDev: config.gatewayDev,
    eipCidr: formatIpv4Net(config.eipCidr),
    arpPoisoning: config.arpPoisoning,
    cniDev: config.cniDev,
    trafficCounters: config.trafficIntervalSec > 0,
  };
}

function kernelParts(
  config: AgentConfig,
  runner: CommandRunner,
  logger: Logger,
  arrivals: ArpArrivals,
  mode: IptablesMode,
): Subsystem[] {
  return [
    ...kernelSubsystems({
      runner,
      iptablesMode: mode,
      dataplane: config.dataplane,
      gatewayDev: config.gatewayDev,
      eipCidr: formatIpv4Net(config.eipCidr),
      procSysDir: config.procSysDir,
      arrivals,
    }),
    conntrackSubsystem(new ConntrackCleaner(runner, logger)),
  ];
}

/**
 * The announcers, each an "announce" subsystem: gratuitous ARP for the EIPs the node answers
 * ARP for (addresses on the gateway device, or proxy entries), and BGP when it is on.
 */
function announcers(
  arp: ArpAnnouncer,
  bgp: BgpAnnouncer | undefined,
  metrics: AgentMetrics,
): Subsystem[] {
  const list = [
    announcing(
      "arp",
      "nothing: gratuitous ARP for the EIPs that arrived",
      arp,
      (d) => d.arpProxy?.eips ?? d.gatewayAddresses,
    ),
  ];
  if (bgp) {
    const subsystem = announcing("bgp", "the paths announced to gobgpd", bgp, (d) => d.announced);
    list.push({
      ...subsystem,
      sync: async (desired, options) => {
        const changes = await subsystem.sync(desired, options);
        metrics.bgpAnnounced.set(bgp.status().announced);
        return changes;
      },
    });
  }
  return list;
}

/** Runs after the kernel's NAT is written; never fails an apply (a failure is logged). */
function conntrackSubsystem(cleaner: ConntrackCleaner): Subsystem {
  return {
    name: "conntrack",
    owns: "nothing: forgets the flows of bindings that went",
    stage: "after",
    sync: (desired) => cleaner.sync(desired.bound),
    read: async () => undefined,
    adopt: () => {},
  };
}

/** The BGP speaker and the announcer that keeps its paths equal to the bound EIPs. */
function bgpParts(
  bgp: BgpConfig,
  config: AgentConfig,
  logger: Logger,
  metrics: AgentMetrics,
  dataplane: () => Dataplane,
  readBack: () => ReadBack,
) {
  const client = new GobgpClient(GobgpSpeaker.target({ ...bgp, stateDir: config.stateDir }));
  /** Applies (kernel included) that succeeded for a fresh speaker. */
  let freshApplies = 0;
  /** Whether each peer's session was up at its last state change. */
  const established = new Map<string, boolean>();
  const announcer = new BgpAnnouncer(client, {
    nextHop: bgp.nextHop,
    eipCidr: formatIpv4Net(config.eipCidr),
  });
  const speaker = new GobgpSpeaker(client, {
    global: { asn: bgp.localAs, routerId: bgp.routerId, listenPort: bgp.listenPort },
    peers: bgp.peers,
    endpoint: bgp.endpoint,
    binary: bgp.gobgpdBinary,
    apiPort: bgp.apiPort,
    stateDir: config.stateDir,
    logger,
    announce: async () => {
      metrics.bgpSpeakerRestarts.inc();
      announcer.invalidate();
      await dataplane()
        .sync()
        .then(() => freshApplies++)
        .catch((err: unknown) => {
          // The loop retries; the peers are added regardless.
          logger.warn({ err }, "BGP: announcing to a fresh speaker failed");
        });
    },
    onPeerState: (peer) => {
      const up = peer.state === "ESTABLISHED";
      metrics.bgpSessionUp.set({ peer: peer.address }, up ? 1 : 0);
      if (established.get(peer.address) !== up) readBack().peerChanged(up);
      established.set(peer.address, up);
    },
  });
  return { client, announcer, speaker, freshApplies: () => freshApplies };
}

/** The backend to write to; a warning (and a metric) when the other one may drop our traffic. */
async function chooseIptablesBackend(
  config: AgentConfig,
  runner: CommandRunner,
  logger: Logger,
  metrics: AgentMetrics,
): Promise<IptablesMode> {
  const { mode, otherDrops } = await inspectIptablesBackends(runner, config.iptablesMode);
  logger.info({ mode, requested: config.iptablesMode }, "iptables backend chosen");
  const other = mode === "nft" ? "legacy" : "nft";
  metrics.iptablesOtherBackendDrops.set({ backend: other }, otherDrops.length);
  if (otherDrops.length > 0) {
    logger.warn(
      { mode, other, drops: otherDrops.slice(0, 20), count: otherDrops.length },
      "the other iptables backend holds policies or rules that may drop EIP traffic",
    );
  }
  return mode;
}

export async function startAgent(
  config: AgentConfig,
  deps: { runner: CommandRunner; logger: Logger },
): Promise<RunningAgent> {
  const { runner, logger } = deps;
  await ensureRouteTableName(config.rtTablesPath, ROUTE_TABLE_ID, ROUTE_TABLE_NAME);
  await runner.run("ip", ["link", "show", "dev", config.cniDev]).catch(() => {
    logger.warn(
      { dev: config.cniDev },
      "the CNI bridge does not exist (yet): VMIs behind it cannot be reached",
    );
  });
  const metrics = new AgentMetrics();
  const store = new BindingStore(config.stateDir);
  const mode = await chooseIptablesBackend(config, runner, logger, metrics);
  await checkTcpLoose(new SysctlWriter(runner, { procSysDir: config.procSysDir }), logger);
  const table = await loadBindings(config, store, logger, () =>
    readKernelBindings(runner, config.dataplane, mode),
  );
  const garp = new GratuitousArp(runner, logger, {
    device: config.gatewayDev,
    count: config.garpCount,
  });
  const arrivals = new ArpArrivals();
  const bgp = config.bgp
    ? bgpParts(
        config.bgp,
        config,
        logger,
        metrics,
        (): Dataplane => dataplane,
        (): ReadBack => readBack,
      )
    : undefined;
  if (!bgp) await stopLeftoverSpeaker(config.stateDir, logger);
  const subsystems: Subsystem[] = [
    ...kernelParts(config, runner, logger, arrivals, mode),
    ...announcers(new ArpAnnouncer(garp, arrivals), bgp?.announcer, metrics),
  ];
  const readBack: ReadBack = new ReadBack({
    subsystems,
    config: planConfig(config),
    logger,
    ...(bgp
      ? {
          bgp: {
            peers: () => bgp.speaker.peers(),
            adjOut: (peer: string) => bgp.client.listAdjOut(peer),
          },
        }
      : {}),
  });
  const dataplane: Dataplane = new Dataplane({
    table,
    store,
    config: planConfig(config),
    subsystems,
    logger,
    metrics,
    readBack,
  });
  let metricsServer: HttpServer | undefined;
  let metricsPort: number | undefined;
  if (config.metricsAddress) {
    ({ server: metricsServer, port: metricsPort } = await serve(config.metricsAddress, {
      ...metricsRoute(metrics.registry),
      "/healthz": probe(() => dataplane.stalled(config.stallTimeoutSec * 1000)),
      "/readyz": probe(() => dataplane.notReady()),
    }));
    logger.info({ address: config.metricsAddress }, "serving metrics and probes");
  }

  // The speaker first: a fresh one gets every EIP (the apply restores the kernel too)
  // before its peers are added; an adopted one keeps its sessions and is diffed below.
  await bgp?.speaker.start();
  try {
    // The first apply re-reads everything: if a fresh speaker's made it, it restored all.
    if (!bgp || bgp.freshApplies() === 0) await dataplane.resync();
    logger.info({ bindings: table.size }, "kernel state restored");
  } catch {
    // Logged by the loop, which keeps retrying; serve anyway so the operator can see why.
  }
  dataplane.startResync(config.resyncIntervalSec * 1000);
  const traffic =
    config.trafficIntervalSec > 0
      ? new TrafficMonitor({
          reader:
            config.dataplane === "nftables"
              ? new NftTrafficReader(runner)
              : new IpsetTrafficReader(runner),
          bindings: () => table.list(),
          metrics,
          logger,
        })
      : undefined;
  traffic?.start(config.trafficIntervalSec * 1000);

  const service = new AgentService({
    table,
    dataplane,
    policy: {
      eipCidr: config.eipCidr,
      internalNets: config.internalNets,
      gatewayIp: config.gatewayIp,
    },
    logger,
    metrics,
    readBack,
    ...(traffic ? { traffic } : {}),
    ...(config.tls ? { authorizer: new Authorizer(config.tls.allow) } : {}),
    nodeAddresses: new NodeAddresses(runner, {
      gatewayDev: config.gatewayDev,
      protocol: ARP_ROUTE_PROTOCOL,
    }),
    ...(bgp
      ? {
          bgp: {
            peers: () => bgp.speaker.peers(),
            announced: () => bgp.announcer.status().announced,
          },
        }
      : {}),
  });
  const { server, health } = buildGrpcServer(service);
  const tlsNow = config.tls ? readServerTls(config.tls) : undefined;
  const creds = tlsNow ? new ReloadingServerCredentials(tlsNow) : serverCredentials(undefined);
  const grpcPort = await bindServer(
    server,
    `${hostPort(config.listenAddress, config.port)}`,
    creds,
  );
  const tlsWatch =
    config.tls && tlsNow && creds instanceof ReloadingServerCredentials
      ? watchServerTls(config.tls, creds, logger, metrics, tlsNow)
      : undefined;
  if (config.unixSocket) {
    await rm(config.unixSocket, { force: true });
    await bindServer(server, `unix:${config.unixSocket}`, serverCredentials(undefined));
  }
  health.setStatus("", "SERVING");
  health.setStatus("protoc.EipAgent", "SERVING");
  metrics.insecure.set(config.insecure ? 1 : 0);
  if (config.insecure) {
    logger.warn(
      { address: config.listenAddress },
      "--insecure: gRPC without TLS; anyone who reaches this address can bind, unbind and list",
    );
  }
  logger.info(
    {
      port: grpcPort,
      address: config.listenAddress,
      tls: config.tls !== undefined,
      ...(config.tls
        ? { allowedClients: config.tls.allow.clients, allowedReaders: config.tls.allow.readers }
        : {}),
    },
    "serving gRPC",
  );

  return {
    grpcPort,
    metricsPort,
    dataplane,
    speaker: bgp?.speaker,
    async stop() {
      tlsWatch?.stop();
      traffic?.stop();
      health.setStatus("", "NOT_SERVING");
      await shutdown(server);
      metricsServer?.close();
      // gobgpd keeps running, and with it the sessions and the routes, for the next agent.
      await bgp?.speaker.stop();
      await dataplane.stop();
      readBack.stop();
      bgp?.client.close();
      garp.stop();
    },
  };
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function shutdown(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 5000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
