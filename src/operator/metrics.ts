// The operator's Prometheus metrics, on a registry of its own.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: "kube_eip_operator_reconcile_total",
    help: "Reconciles of an EipBinding, by result (success, retry: reported and retried, error: unexpected)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: "kube_eip_operator_reconcile_duration_seconds",
    help: "Time to reconcile one EipBinding, agent calls and status write included",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: "kube_eip_operator_queue_depth",
    help: "EipBindings waiting to be reconciled",
    registers: [this.registry],
  });
  readonly bindings = new Gauge({
    name: "kube_eip_operator_bindings",
    help: "EipBindings by the reason of their Ready condition (Bound when ready)",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly agentCalls = new Counter({
    name: "kube_eip_operator_agent_calls_total",
    help: "Calls to node agents, by operation and result (ok, refused, unreachable)",
    labelNames: ["op", "result"] as const,
    registers: [this.registry],
  });
  readonly antiEntropyRepairs = new Counter({
    name: "kube_eip_operator_anti_entropy_repairs_total",
    help: "Differences anti-entropy found between the agents and the EipBindings, by kind (missing: an agent lost a binding it held, queued again; unwanted: unbound)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly informerRestarts = new Gauge({
    name: "kube_eip_operator_informer_restarts",
    help: "Times an informer re-listed after an error, a lost watch or silence, by resource",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "kube_eip_operator_leader",
    help: "1 while this replica leads (and so acts)",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
  readonly tlsExpiry = new Gauge({
    name: "kube_eip_operator_tls_cert_expiry_seconds",
    help: "Seconds until the certificate in this file expires (negative: expired)",
    labelNames: ["file"] as const,
    registers: [this.registry],
  });
}
