// eip-operator's command line. Flag names follow the seed's (kubebuilder) operator where it
// had them: --metrics-bind-address, --health-probe-bind-address, --leader-elect.
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_PORT } from "../common/agent-api.js";
import { canonicalIpv4 } from "../common/ipv4.js";
import type { TlsFiles } from "../common/agent-api.js";

export interface OperatorConfig {
  readonly kubeconfig: string | undefined;
  readonly metricsAddress: string;
  readonly healthAddress: string;
  readonly leaderElect: boolean;
  readonly leaderElectionNamespace: string | undefined;
  readonly leaderElectionId: string;
  readonly agentPort: number;
  readonly agentTls: TlsFiles | undefined;
  readonly agentTimeoutMs: number;
  readonly antiEntropyMs: number;
  readonly nodeNotReadyGraceMs: number;
  readonly workers: number;
  /** Addresses pools never hand out (the agents' --gateway-ip), beside the nodes' own. */
  readonly reservedAddresses: readonly string[];
  readonly logLevel: "debug" | "info" | "warn" | "error";
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** "30s", "2m", "1h", "500ms" or a plain number of seconds. */
export function durationMs(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a duration like 30s`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"] ?? 1000;
  const ms = n * unit;
  if (ms <= 0) throw new InvalidArgumentError("must be positive");
  return ms;
}

function intIn(min: number, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      throw new InvalidArgumentError(`must be a whole number from ${min} to ${max}`);
    }
    return Number(value);
  };
}

function ipList(value: string): string[] {
  const list = value.split(",").map((s) => s.trim());
  const bad = list.find((s) => !canonicalIpv4(s));
  if (bad !== undefined)
    throw new InvalidArgumentError(`${JSON.stringify(bad)} is not an IPv4 address`);
  return list.map((s) => canonicalIpv4(s) as string);
}

export function operatorCommand(): Command {
  return new Command("eip-operator")
    .description(
      "kube-eip operator: keeps every EipBinding's EIP bound, through the node agents, to its VirtualMachineInstance wherever it runs",
    )
    .option("--kubeconfig <path>", "kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    .option(
      "--metrics-bind-address <host:port>",
      "Prometheus /metrics, plain HTTP (no secrets in it; see docs/security.md); 0 disables",
      ":8080",
    )
    .option("--health-probe-bind-address <host:port>", "/healthz and /readyz", ":8081")
    .option("--leader-elect", "elect a leader with a Lease, so only one replica acts", false)
    .option(
      "--leader-election-namespace <ns>",
      "namespace of the Lease (default: the pod's namespace)",
    )
    .option("--leader-election-id <name>", "name of the Lease", "kube-eip-leader")
    .option("--agent-port <port>", "the agents' gRPC port", intIn(1, 65535), DEFAULT_PORT)
    .option(
      "--agent-tls-ca <file>",
      "dial the agents with TLS, trusting this CA (PEM); each must present its own node's certificate (CN kube-eip-agent:<node>)",
    )
    .option("--agent-tls-cert <file>", "client certificate for the agents (PEM)")
    .option("--agent-tls-key <file>", "key of --agent-tls-cert (PEM)")
    .option(
      "--agent-insecure",
      "dial the agents in plaintext (they run with --insecure): no TLS, no check of who answers",
      false,
    )
    .option("--agent-timeout <duration>", "deadline of one agent call", durationMs, 10_000)
    .option(
      "--anti-entropy-interval <duration>",
      "how often every agent is asked what it holds and differences are fixed",
      durationMs,
      30_000,
    )
    .option(
      "--node-not-ready-grace <duration>",
      "how long a deletion waits for the agent of a NotReady node before it finishes without that agent",
      durationMs,
      300_000,
    )
    .option("--workers <n>", "EipBindings reconciled at once", intIn(1, 256), 8)
    .option(
      "--pool-reserved <ips>",
      "comma-separated addresses EipPools never hand out: the agents' --gateway-ip (node addresses are left out anyway)",
      ipList,
      [],
    )
    .addOption(
      new Option("--log-level <level>", "log level")
        .choices(["debug", "info", "warn", "error"])
        .default("info"),
    );
}

interface RawOptions {
  kubeconfig?: string;
  metricsBindAddress: string;
  healthProbeBindAddress: string;
  leaderElect: boolean;
  leaderElectionNamespace?: string;
  leaderElectionId: string;
  agentPort: number;
  agentTlsCa?: string;
  agentTlsCert?: string;
  agentTlsKey?: string;
  agentInsecure: boolean;
  agentTimeout: number;
  antiEntropyInterval: number;
  nodeNotReadyGrace: number;
  workers: number;
  poolReserved: string[];
  logLevel: OperatorConfig["logLevel"];
}

export function toOperatorConfig(o: RawOptions): OperatorConfig {
  if ((o.agentTlsCert === undefined) !== (o.agentTlsKey === undefined)) {
    throw new ConfigError("--agent-tls-cert and --agent-tls-key go together");
  }
  if (o.agentTlsCert && !o.agentTlsCa) {
    throw new ConfigError("--agent-tls-cert needs --agent-tls-ca");
  }
  if (!o.agentTlsCa && !o.agentInsecure) {
    throw new ConfigError(
      "refusing to dial the agents without TLS: give --agent-tls-ca, --agent-tls-cert and --agent-tls-key, or --agent-insecure",
    );
  }
  if (o.agentTlsCa && o.agentInsecure) {
    throw new ConfigError("--agent-insecure contradicts --agent-tls-ca");
  }
  for (const [flag, value] of [
    ["--metrics-bind-address", o.metricsBindAddress],
    ["--health-probe-bind-address", o.healthProbeBindAddress],
  ] as const) {
    if (value !== "0" && !/^[^\s]*:\d{1,5}$/.test(value)) {
      throw new ConfigError(`${flag} ${JSON.stringify(value)} is not HOST:PORT (or 0)`);
    }
  }
  return {
    kubeconfig: o.kubeconfig,
    metricsAddress: o.metricsBindAddress,
    healthAddress: o.healthProbeBindAddress,
    leaderElect: o.leaderElect,
    leaderElectionNamespace: o.leaderElectionNamespace,
    leaderElectionId: o.leaderElectionId,
    agentPort: o.agentPort,
    agentTls: o.agentTlsCa
      ? {
          ca: o.agentTlsCa,
          ...(o.agentTlsCert ? { cert: o.agentTlsCert, key: o.agentTlsKey } : {}),
        }
      : undefined,
    agentTimeoutMs: o.agentTimeout,
    antiEntropyMs: o.antiEntropyInterval,
    nodeNotReadyGraceMs: o.nodeNotReadyGrace,
    workers: o.workers,
    reservedAddresses: o.poolReserved,
    logLevel: o.logLevel,
  };
}

export function parseOperatorArgs(argv: readonly string[]): OperatorConfig {
  const cmd = operatorCommand()
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
  try {
    cmd.parse([...argv], { from: "user" });
  } catch (err) {
    throw new ConfigError((err as Error).message.replace(/^error: /, ""));
  }
  return toOperatorConfig(cmd.opts<RawOptions>());
}
