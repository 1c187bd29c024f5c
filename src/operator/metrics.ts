// The operator's Prometheus metrics, on a registry of its own: kube_eip_operator_*, and the
// families of controller-runtime and client-go that stock dashboards and alerts read
// (controller_runtime_reconcile_*, workqueue_*, rest_client_requests_total).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { WorkQueueMetrics } from "../kube/workqueue.js";

/** The controller's name in the controller-runtime families (its kind, lowercased). */
export const CONTROLLER = "eipbinding";

export type ReconcileResult = "success" | "retry" | "error";
/** controller-runtime's results: a retried reconcile is a requeue, not an error. */
const RUNTIME_RESULT = { success: "success", retry: "requeue", error: "error" } as const;
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

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
    buckets: DURATION_BUCKETS,
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
  readonly informerRestarts = new Counter({
    name: "kube_eip_operator_informer_restarts_total",
    help: "Times an informer re-listed after an error, a lost watch or silence, by resource",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "kube_eip_operator_leader",
    help: "1 while this replica leads (and so acts)",
    registers: [this.registry],
  });

  private readonly runtimeReconciles = new Counter({
    name: "controller_runtime_reconcile_total",
    help: "Total number of reconciliations per controller",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  private readonly runtimeReconcileErrors = new Counter({
    name: "controller_runtime_reconcile_errors_total",
    help: "Total number of reconciliation errors per controller",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  private readonly runtimeReconcileTime = new Histogram({
    name: "controller_runtime_reconcile_time_seconds",
    help: "Length of time per reconciliation per controller",
    labelNames: ["controller"] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly workqueueDepth = new Gauge({
    name: "workqueue_depth",
    help: "Current depth of workqueue",
    labelNames: ["controller", "name"] as const,
    registers: [this.registry],
  });
  private readonly workqueueAdds = new Counter({
    name: "workqueue_adds_total",
    help: "Total number of adds handled by workqueue",
    labelNames: ["controller", "name"] as const,
    registers: [this.registry],
  });
  private readonly workqueueQueueDuration = new Histogram({
    name: "workqueue_queue_duration_seconds",
    help: "How long in seconds an item stays in workqueue before being requested",
    labelNames: ["controller", "name"] as const,
    buckets: [1e-6, 1e-5, 1e-4, 0.001, 0.01, 0.1, 1, 10, 100],
    registers: [this.registry],
  });
  private readonly workqueueRetries = new Counter({
    name: "workqueue_retries_total",
    help: "Total number of retries handled by workqueue",
    labelNames: ["controller", "name"] as const,
    registers: [this.registry],
  });
  private readonly restClientRequests = new Counter({
    name: "rest_client_requests_total",
    help: "Number of HTTP requests to the apiserver, partitioned by status code, method, and host",
    labelNames: ["code", "method", "host"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** One reconcile of an EipBinding: ours and controller-runtime's families. */
  reconciled(result: ReconcileResult, seconds: number): void {
    this.reconciles.inc({ result });
    this.reconcileDuration.observe(seconds);
    this.runtimeReconciles.inc({ controller: CONTROLLER, result: RUNTIME_RESULT[result] });
    if (result === "error") this.runtimeReconcileErrors.inc({ controller: CONTROLLER });
    this.runtimeReconcileTime.observe({ controller: CONTROLLER }, seconds);
  }

  /** The hooks of the controller's work queue (WorkQueueOptions.metrics). */
  workQueue(): WorkQueueMetrics {
    const labels = { controller: CONTROLLER, name: CONTROLLER };
    return {
      depth: (ready) => {
        this.workqueueDepth.set(labels, ready);
        this.queueDepth.set(ready);
      },
      added: () => this.workqueueAdds.inc(labels),
      waited: (ms) => this.workqueueQueueDuration.observe(labels, ms / 1000),
      retried: () => this.workqueueRetries.inc(labels),
    };
  }

  /** The hook of the Kubernetes client talking to host (KubeClientOptions.onRequest). */
  restClient(host: string): (method: string, code: string) => void {
    return (method, code) => this.restClientRequests.inc({ code, method, host });
  }

  readonly tlsExpiry = new Gauge({
    name: "kube_eip_operator_tls_cert_expiry_seconds",
    help: "Seconds until the certificate in this file expires (negative: expired)",
    labelNames: ["file"] as const,
    registers: [this.registry],
  });
}
