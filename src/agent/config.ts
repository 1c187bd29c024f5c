// eip_agent's command line: the seed's flags with the seed's defaults, plus what a real
// deployment needs. This is the one place flags are read; everything after it gets a
// validated AgentConfig.
import { Command, InvalidArgumentError, Option } from "commander";
import {
  type Ipv4Net,
  canonicalIpv4,
  formatIpv4Net,
  netContains,
  parseIpv4,
  parseIpv4Net,
} from "../common/ipv4.js";
import { DEFAULT_PORT } from "../common/agent-api.js";
import { type BgpConfig, type BgpFlags, type PeerFlag, bgpConfig } from "./bgp-config.js";
import { ConfigError } from "./config-error.js";
import {
  type AgentTls,
  type TlsFlags,
  TlsConfigError,
  addTlsOptions,
  isLoopback,
  tlsConfig,
} from "./tls-config.js";

export { ConfigError } from "./config-error.js";
export type { BgpConfig } from "./bgp-config.js";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type IptablesModeFlag = "auto" | "legacy" | "nft";

export interface AgentConfig {
  readonly port: number;
  readonly listenAddress: string;
  readonly unixSocket: string | undefined;
  readonly logLevel: LogLevel;
  readonly internalNets: readonly Ipv4Net[];
  readonly gatewayIp: string;
  readonly gatewayDev: string;
  readonly bgpType: "none" | "gobgp";
  /** Set exactly when bgpType is gobgp. */
  readonly bgp: BgpConfig | undefined;
  readonly eipCidr: Ipv4Net;
  readonly arpPoisoning: boolean;
  readonly garpCount: number;
  readonly stateDir: string;
  /** Rebuild lost or unreadable saved bindings from the kernel's NAT rules (recovery.ts). */
  readonly recoverFromKernel: boolean;
  readonly seedStateDir: string;
  readonly cniDev: string;
  readonly iptablesMode: IptablesModeFlag;
  /** --dataplane: what writes the NAT and forward accepts (docs/dataplanes.md). */
  readonly dataplane: "iptables" | "nftables";
  readonly resyncIntervalSec: number;
  /** Seconds between reads of the per-EIP traffic counters; 0: the kernel counts nothing. */
  readonly trafficIntervalSec: number;
  /** Time limit of every command the agent runs (ip, iptables, ipset, sysctl, conntrack...). */
  readonly commandTimeoutSec: number;
  /** /healthz fails once one apply has run longer than this. */
  readonly stallTimeoutSec: number;
  readonly rtTablesPath: string;
  /** Kernel settings as files under this dir instead of through sysctl (a container's view of the node's /proc/sys). */
  readonly procSysDir: string | undefined;
  readonly metricsAddress: string;
  readonly tls: AgentTls | undefined;
  /** Plaintext gRPC on a non-loopback address, asked for with --insecure. */
  readonly insecure: boolean;
}

function cidr(value: string): Ipv4Net {
  const net = parseIpv4Net(value);
  if (!net)
    throw new InvalidArgumentError(
      `${JSON.stringify(value)} is not an IPv4 network like 10.244.0.0/16`,
    );
  return net;
}

function collectCidr(value: string, previous: Ipv4Net[]): Ipv4Net[] {
  return [...previous, cidr(value)];
}

function ipv4(value: string): string {
  const ip = canonicalIpv4(value);
  if (!ip) throw new InvalidArgumentError(`${JSON.stringify(value)} is not an IPv4 address`);
  return ip;
}

function intIn(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

/** Seconds, fractions allowed (0.5), from 0.1 to one day. */
function seconds(value: string): number {
  const n = Number(value);
  if (!/^\d+(\.\d+)?$/.test(value) || n < 0.1 || n > 86400) {
    throw new InvalidArgumentError("must be a number of seconds from 0.1 to 86400");
  }
  return n;
}

/** A 4-byte AS number; 0 is reserved. */
const asNumber = intIn(1, 4294967295);

function collectPeer(value: string, previous: PeerFlag[]): PeerFlag[] {
  const idx = value.lastIndexOf(":");
  const address = canonicalIpv4(value.slice(0, idx));
  if (idx === -1 || !address) {
    throw new InvalidArgumentError(
      `${JSON.stringify(value)} is not ADDRESS:AS like 172.16.0.1:65000 (an IPv4 address and an AS number)`,
    );
  }
  let asn: number;
  try {
    asn = asNumber(value.slice(idx + 1));
  } catch {
    throw new InvalidArgumentError(
      `${JSON.stringify(value)}: the AS number must be a whole number from 1 to 4294967295`,
    );
  }
  return [...previous, { address, asn }];
}

/**
 * The seed's CLI library accepted Go-style single-dash long flags (-port 6127); scripts
 * written for it keep working.
 */
export function normalizeGoFlags(argv: readonly string[]): string[] {
  return argv.map((arg) => (/^-[a-z][a-z-]+(=.*)?$/.test(arg) ? `-${arg}` : arg));
}

export function agentCommand(): Command {
  const cmd = new Command("eip_agent")
    .description(
      "kube-eip node agent: binds elastic IPs to VMIs on this node (DNAT in, SNAT out, " +
        "policy routing through the public gateway) and keeps the kernel state true to its bindings.",
    )
    .option("--port <port>", "gRPC port", intIn(1, 65535), DEFAULT_PORT)
    .option("--listen-address <address>", "address the gRPC server listens on", "0.0.0.0")
    .option(
      "--unix-socket <path>",
      "also serve gRPC, without TLS, on this Unix socket (local administration)",
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .choices(["debug", "info", "warn", "error"])
        .default("info"),
    )
    .option(
      "--internal-net <cidr>",
      "pod or service network: traffic to it is never NATed, a VMI address must be in one (repeatable, at least one)",
      collectCidr,
      [] as Ipv4Net[],
    )
    .option("--gateway-ip <ip>", "the public network's gateway (required)", ipv4)
    .option("--gateway-dev <dev>", "this node's device on the public network (required)")
    .addOption(
      new Option("--bgp-type <type>", "BGP announcer").choices(["none", "gobgp"]).default("none"),
    )
    .option(
      "--node-ip <ip>",
      "this node's management address: BGP next hop and router id unless set apart",
      ipv4,
    )
    .option(
      "--bgp-local-as <as>",
      "this node's AS number (required with --bgp-type gobgp)",
      asNumber,
    )
    .option(
      "--bgp-peer <address:as>",
      "an EIP router to announce to, as ADDRESS:AS (repeatable)",
      collectPeer,
      [] as PeerFlag[],
    )
    .option("--bgp-router-id <ip>", "BGP router id (default: --node-ip)", ipv4)
    .option("--bgp-nexthop <ip>", "next hop announced for each EIP (default: --node-ip)", ipv4)
    .option("--bgp-peer-port <port>", "the peers' BGP port", intIn(1, 65535), 179)
    .option("--bgp-password <password>", "TCP MD5 password of the BGP sessions")
    .option("--bgp-hold-time <seconds>", "BGP hold time", intIn(3, 65535), 90)
    .option(
      "--bgp-graceful-restart-time <seconds>",
      "graceful restart time offered to the peers; 0 disables graceful restart",
      intIn(0, 4095),
      120,
    )
    .option(
      "--bgp-listen-port <port>",
      "also accept BGP sessions on this port; 0: only connect out",
      intIn(0, 65535),
      0,
    )
    .option(
      "--gobgp-endpoint <unix:path|host:port>",
      "use the gobgpd whose API listens here (a sidecar) instead of running one",
    )
    .option("--gobgpd-binary <path>", "the gobgpd the agent runs", "gobgpd")
    .option(
      "--gobgp-api-port <port>",
      "serve the API of the gobgpd the agent runs on this loopback TCP port, which every process of the node can reach, instead of its Unix socket",
      intIn(1, 65535),
    )
    .option("--eip-cidr <cidr>", "the public (EIP) network (required)", cidr)
    .option(
      "--arp-poisoning",
      "answer ARP for bound EIPs instead of adding them to the gateway device",
      false,
    )
    .option(
      "--garp-count <n>",
      "gratuitous ARPs sent for an EIP arriving on this node, one a second; 0 disables",
      intIn(0, 10),
      3,
    )
    .option("--state-dir <dir>", "where the node's bindings are saved", "/var/lib/kube-eip")
    .option(
      "--recover-from-kernel",
      "when the saved bindings are missing or unreadable, rebuild them from the kernel's NAT rules (see docs/safety.md)",
      false,
    )
    .option(
      "--seed-state-dir <dir>",
      "state directory of the Go kube-eip agent, adopted at first start",
      "/var/run/eip_agent",
    )
    .option(
      "--cni-dev <dev>",
      "the CNI bridge the VMIs are plugged into (checked at start; internal traffic follows the node's own routes; with --arp-poisoning the EIPs' host routes go through it)",
      "cni0",
    )
    .addOption(
      new Option(
        "--iptables-mode <mode>",
        "iptables backend; auto uses the one holding the host's rules",
      )
        .choices(["auto", "legacy", "nft"])
        .default("auto"),
    )
    .addOption(
      new Option(
        "--dataplane <dataplane>",
        "what writes the NAT and forward accepts: iptables chains and ipsets, or one nftables table (restart with the other to switch)",
      )
        .choices(["iptables", "nftables"])
        .default("iptables"),
    )
    .option(
      "--resync-interval <seconds>",
      "re-read the kernel and repair drift this often",
      intIn(1, 86400),
      10,
    )
    .option(
      "--traffic-interval <seconds>",
      "read the per-EIP traffic counters this often; 0 turns counting off (docs/traffic.md)",
      intIn(0, 3600),
      10,
    )
    .option(
      "--command-timeout <seconds>",
      "time limit of each command the agent runs; one past it is killed and its step retried",
      seconds,
      30,
    )
    .option(
      "--stall-timeout <seconds>",
      "/healthz fails once one apply (several commands) has run longer than this",
      seconds,
      300,
    )
    .option(
      "--rt-tables <path>",
      "iproute2 table names file to register eip_route in",
      "/etc/iproute2/rt_tables",
    )
    .option(
      "--proc-sys <dir>",
      "read and write kernel settings as files under this directory (the node's /proc/sys/net mounted at <dir>/net) instead of through sysctl: for a container without privileges, whose own /proc/sys is read-only",
    )
    .option(
      "--metrics-address <host:port>",
      "Prometheus metrics listen address; empty disables",
      "0.0.0.0:9127",
    );
  return addTlsOptions(cmd).addHelpText(
    "after",
    "\nExample:\n  eip_agent --gateway-ip 192.168.18.1 --gateway-dev eth1 --eip-cidr 192.168.18.0/24 \\\n" +
      "    --internal-net 10.244.0.0/16 --internal-net 192.168.223.0/24",
  );
}

interface RawOptions extends TlsFlags, BgpFlags {
  port: number;
  listenAddress: string;
  unixSocket?: string;
  logLevel: LogLevel;
  internalNet: Ipv4Net[];
  gatewayIp?: string;
  gatewayDev?: string;
  eipCidr?: Ipv4Net;
  arpPoisoning: boolean;
  garpCount: number;
  recoverFromKernel: boolean;
  seedStateDir: string;
  cniDev: string;
  iptablesMode: IptablesModeFlag;
  dataplane: "iptables" | "nftables";
  resyncInterval: number;
  trafficInterval: number;
  commandTimeout: number;
  stallTimeout: number;
  rtTables: string;
  procSys?: string;
  metricsAddress: string;
}

/** Turns parsed options into a config, or throws ConfigError saying what is wrong. */
export function toAgentConfig(o: RawOptions): AgentConfig {
  const missing = [
    o.gatewayIp ? undefined : "--gateway-ip",
    o.gatewayDev ? undefined : "--gateway-dev",
    o.eipCidr ? undefined : "--eip-cidr",
  ].filter((x) => x !== undefined);
  if (missing.length > 0) throw new ConfigError(`missing required flag(s): ${missing.join(", ")}`);
  const eipCidr = o.eipCidr as Ipv4Net;
  const gatewayIp = o.gatewayIp as string;
  if (o.internalNet.length === 0) {
    // Without one, any VMI address would be accepted, the node's own services behind the
    // CNI gateway included, and every destination would be NATed.
    throw new ConfigError(
      "no --internal-net: give the pod and service networks (the ConfigMap's pod_net and svc_net)",
    );
  }
  const overlapping = o.internalNet.find(
    (n) => netContains(n, eipCidr.base) || netContains(eipCidr, n.base),
  );
  if (overlapping) {
    throw new ConfigError(
      `--eip-cidr ${formatIpv4Net(eipCidr)} overlaps --internal-net ${formatIpv4Net(overlapping)}`,
    );
  }
  if (!netContains(eipCidr, parseIpv4(gatewayIp) ?? 0)) {
    throw new ConfigError(
      `--gateway-ip ${gatewayIp} is outside --eip-cidr ${formatIpv4Net(eipCidr)}`,
    );
  }
  if (!/^[\w.:@-]{1,15}$/.test(o.gatewayDev as string)) {
    throw new ConfigError(
      `--gateway-dev ${JSON.stringify(o.gatewayDev)} is not a network device name`,
    );
  }
  if (!/^[\w.:@-]{1,15}$/.test(o.cniDev)) {
    throw new ConfigError(`--cni-dev ${JSON.stringify(o.cniDev)} is not a network device name`);
  }
  if (o.arpPoisoning && o.cniDev === o.gatewayDev) {
    // Proxy ARP answers only for addresses whose route leaves through another device.
    throw new ConfigError("--arp-poisoning needs a --cni-dev other than --gateway-dev");
  }
  let tls: AgentTls | undefined;
  try {
    tls = tlsConfig(o, o.listenAddress);
  } catch (err) {
    throw err instanceof TlsConfigError ? new ConfigError(err.message) : err;
  }
  return {
    port: o.port,
    bgp: bgpConfig(o),
    listenAddress: o.listenAddress,
    unixSocket: o.unixSocket,
    logLevel: o.logLevel,
    internalNets: o.internalNet,
    gatewayIp,
    gatewayDev: o.gatewayDev as string,
    bgpType: o.bgpType,
    eipCidr,
    arpPoisoning: o.arpPoisoning,
    garpCount: o.garpCount,
    stateDir: o.stateDir,
    recoverFromKernel: o.recoverFromKernel,
    seedStateDir: o.seedStateDir,
    cniDev: o.cniDev,
    iptablesMode: o.iptablesMode,
    dataplane: o.dataplane,
    resyncIntervalSec: o.resyncInterval,
    trafficIntervalSec: o.trafficInterval,
    commandTimeoutSec: o.commandTimeout,
    stallTimeoutSec: o.stallTimeout,
    rtTablesPath: o.rtTables,
    procSysDir: o.procSys,
    metricsAddress: o.metricsAddress,
    tls,
    insecure: tls === undefined && !isLoopback(o.listenAddress),
  };
}

/** Parses argv (without node and script) into a config. Usage errors throw. */
export function parseAgentArgs(argv: readonly string[]): AgentConfig {
  const cmd = agentCommand()
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
  try {
    cmd.parse(normalizeGoFlags(argv), { from: "user" });
  } catch (err) {
    throw new ConfigError((err as Error).message.replace(/^error: /, ""));
  }
  return toAgentConfig(cmd.opts<RawOptions>());
}
