// The operator's metrics as Prometheus reads them: conventional names and types, and the
// controller-runtime and client-go families dashboards expect, fed by the real work queue
// and Kubernetes client.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { AgentMetrics } from "../agent/metrics.js";
import { KubeClient, NODES } from "../kube/client.js";
import { FakeClock } from "../common/fake-clock.js";
import { WorkQueue } from "../kube/workqueue.js";
import { OperatorMetrics } from "./metrics.js";

/** The exposition's sample line for name{labels}, as Prometheus scrapes it. */
async function sample(m: OperatorMetrics, series: string): Promise<number | undefined> {
  const text = await m.registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test("counters end in _total and whatever ends in _total is a counter, agent and operator", async () => {
  for (const registry of [new OperatorMetrics().registry, new AgentMetrics().registry]) {
    for (const { name, type } of await registry.getMetricsAsJSON()) {
      // prom-client's own process and Node.js metrics are not ours to name.
      if (!/^(kube_eip|controller_runtime|workqueue|rest_client)_/.test(name)) continue;
      assert.equal(String(type) === "counter", name.endsWith("_total"), `${name}: ${type}`);
    }
  }
  const types = await new OperatorMetrics().registry.metrics();
  assert.match(types, /^# TYPE kube_eip_operator_informer_restarts_total counter$/m);
  assert.doesNotMatch(types, /kube_eip_operator_informer_restarts /);
});

test("reconciles count in ours and controller-runtime's families; a retry is a requeue, not an error", async () => {
  const m = new OperatorMetrics();
  m.reconciled("success", 0.01);
  m.reconciled("success", 0.02);
  m.reconciled("retry", 0.5);
  m.reconciled("error", 2);
  const rt = 'controller_runtime_reconcile_total{controller="eipbinding",result=';
  assert.equal(await sample(m, `${rt}"success"}`), 2);
  assert.equal(await sample(m, `${rt}"requeue"}`), 1);
  assert.equal(await sample(m, `${rt}"error"}`), 1);
  assert.equal(
    await sample(m, 'controller_runtime_reconcile_errors_total{controller="eipbinding"}'),
    1,
  );
  assert.equal(
    await sample(m, 'controller_runtime_reconcile_time_seconds_count{controller="eipbinding"}'),
    4,
  );
  const sum = await sample(
    m,
    'controller_runtime_reconcile_time_seconds_sum{controller="eipbinding"}',
  );
  assert.ok(Math.abs((sum ?? NaN) - 2.53) < 1e-9, String(sum));
  assert.equal(await sample(m, 'kube_eip_operator_reconcile_total{result="retry"}'), 1);
  assert.equal(await sample(m, "kube_eip_operator_reconcile_duration_seconds_count"), 4);
});

test("the work queue reports its depth, adds, waits and retries", async () => {
  const m = new OperatorMetrics();
  const clock = new FakeClock();
  // The backoff at the top of its jitter: exactly 100 ms.
  const q = new WorkQueue({ clock, metrics: m.workQueue(), baseDelayMs: 100, random: () => 1 });
  const labels = '{controller="eipbinding",name="eipbinding"}';
  q.add("vms/a");
  q.add("vms/b");
  q.add("vms/a"); // already waiting: not an add
  assert.equal(await sample(m, `workqueue_depth${labels}`), 2);
  assert.equal(await sample(m, "kube_eip_operator_queue_depth"), 2);
  assert.equal(await sample(m, `workqueue_adds_total${labels}`), 2);
  await clock.advance(250);
  assert.equal(await q.get(), "vms/a");
  assert.equal(await sample(m, `workqueue_depth${labels}`), 1);
  q.addRateLimited("vms/a");
  q.done("vms/a");
  assert.equal(await sample(m, `workqueue_retries_total${labels}`), 1);
  await clock.advance(100); // the backoff: a is added again
  assert.equal(await sample(m, `workqueue_adds_total${labels}`), 3);
  assert.equal(await q.get(), "vms/b");
  assert.equal(await q.get(), "vms/a");
  assert.equal(await sample(m, `workqueue_depth${labels}`), 0);
  assert.equal(await sample(m, `workqueue_queue_duration_seconds_count${labels}`), 3);
  // a waited 0.25 s, b 0.35 s, a again 0 s (handed out as soon as its backoff ended).
  const sum = await sample(m, `workqueue_queue_duration_seconds_sum${labels}`);
  assert.ok(Math.abs((sum ?? NaN) - 0.6) < 1e-9, String(sum));
  q.add("vms/c");
  q.shutdown();
  assert.equal(await sample(m, `workqueue_depth${labels}`), 0);
});

test("API requests are counted by code and method, and those without an answer as <error>", async () => {
  const m = new OperatorMetrics();
  const server = createServer((req, res) => {
    const code = req.url?.includes("/missing") ? 404 : 200;
    res
      .writeHead(code, { "Content-Type": "application/json" })
      .end(JSON.stringify(code === 200 ? { items: [], metadata: {} } : { kind: "Status", code }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new KubeClient(
    { server: `http://${host}` },
    { timeoutMs: 5000, onRequest: m.restClient(host) },
  );
  try {
    await client.list(NODES);
    await client.list(NODES);
    await assert.rejects(client.get(NODES, undefined, "missing"));
    await assert.rejects(client.patch(NODES, undefined, "missing", {}, { type: "merge" }));
    client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await assert.rejects(client.get(NODES, undefined, "n1"), /ECONNREFUSED/);
  } finally {
    client.close();
    server.close();
  }
  const series = (code: string, method: string) =>
    `rest_client_requests_total{code="${code}",method="${method}",host="${host}"}`;
  assert.equal(await sample(m, series("200", "GET")), 2);
  assert.equal(await sample(m, series("404", "GET")), 1);
  assert.equal(await sample(m, series("404", "PATCH")), 1);
  assert.equal(await sample(m, series("<error>", "GET")), 1);
});
