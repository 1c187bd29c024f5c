// The agent's Prometheus metrics, on a registry of its own (no global state, so tests can
// run several agents in one process).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AgentMetrics {
  readonly registry = new Registry();
  readonly bindings = new Gauge({
    name: "kube_eip_agent_bindings",
    help: "EIP bindings held by this node",
    registers: [this.registry],
  });
  readonly inSync = new Gauge({
    name: "kube_eip_agent_dataplane_in_sync",
    help: "1 when the kernel holds exactly the node's bindings, 0 while a failed write is retried",
    registers: [this.registry],
  });
  readonly applyDuration = new Histogram({
    name: "kube_eip_agent_apply_duration_seconds",
    help: "Time to save the bindings and write one batch to the kernel",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly applyErrors = new Counter({
    name: "kube_eip_agent_apply_errors_total",
    help: "Failed applies, by the step (errPhase) that failed",
    labelNames: ["phase"] as const,
    registers: [this.registry],
  });
  readonly driftRepairs = new Counter({
    name: "kube_eip_agent_drift_repairs_total",
    help: "Kernel objects rewritten because they differed from the bindings on a re-read",
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "kube_eip_agent_requests_total",
    help: "EipOperate requests by action and result",
    labelNames: ["action", "result"] as const,
    registers: [this.registry],
  });
  readonly iptablesOtherBackendDrops = new Gauge({
    name: "kube_eip_agent_iptables_other_backend_drops",
    help: "Policies and rules of the iptables backend the agent does not write to that may drop forwarded (EIP) traffic, found at start",
    labelNames: ["backend"] as const,
    registers: [this.registry],
  });

  /** Per-EIP traffic as the kernel counted it (docs/traffic.md), by ListBindings' field. */
  readonly eipTraffic = {
    rxBytes: this.eipCounter("rx_bytes", "Bytes that arrived for the EIP (IP headers included)"),
    txBytes: this.eipCounter("tx_bytes", "Bytes that left as from the EIP (IP headers included)"),
    rxPackets: this.eipCounter("rx_packets", "Packets that arrived for the EIP"),
    txPackets: this.eipCounter("tx_packets", "Packets that left as from the EIP"),
  };
  readonly trafficReadErrors = new Counter({
    name: "kube_eip_agent_traffic_read_errors_total",
    help: "Reads of the kernel's traffic counters that failed (the last read is kept)",
    registers: [this.registry],
  });

  private eipCounter(what: string, help: string): Counter<"eip"> {
    return new Counter({
      name: `kube_eip_agent_eip_${what}_total`,
      help: `${help}, counted by the kernel; never goes backwards while the agent runs`,
      labelNames: ["eip"] as const,
      registers: [this.registry],
    });
  }

  readonly bgpSessionUp = new Gauge({
    name: "kube_eip_agent_bgp_session_up",
    help: "1 while the BGP session with the peer is established",
    labelNames: ["peer"] as const,
    registers: [this.registry],
  });
  readonly bgpAnnounced = new Gauge({
    name: "kube_eip_agent_bgp_announced",
    help: "EIP routes this node announces",
    registers: [this.registry],
  });
  readonly bgpSpeakerRestarts = new Counter({
    name: "kube_eip_agent_bgp_speaker_starts_total",
    help: "Times a fresh gobgpd was started and given every EIP (first start, crash, hang)",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
  readonly insecure = new Gauge({
    name: "kube_eip_agent_grpc_insecure",
    help: "1 when gRPC is served without TLS on a non-loopback address (--insecure)",
    registers: [this.registry],
  });
  readonly tlsExpiry = new Gauge({
    name: "kube_eip_agent_tls_cert_expiry_seconds",
    help: "Seconds until the certificate in this file expires (negative: expired); read again at every check",
    labelNames: ["file"] as const,
    registers: [this.registry],
  });
}
