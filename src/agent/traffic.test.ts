// TrafficMonitor: what ListBindings shows and what the Prometheus counters export, from
// scripted kernel reads.
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { Binding } from "../model/desired.js";
import type { TrafficCounts } from "../kernel/traffic.js";
import { AgentMetrics } from "./metrics.js";
import { TrafficMonitor } from "./traffic.js";

const A: Binding = { eip: "192.168.18.10", vmi: "10.244.1.10" };

function counts(rxBytes: number, txBytes = 0): TrafficCounts {
  return { rxBytes, txBytes, rxPackets: rxBytes / 100, txPackets: txBytes / 100 };
}

async function exported(metrics: AgentMetrics, name: string): Promise<number | undefined> {
  const metric = await metrics.registry.getSingleMetric(name)?.get();
  return metric?.values.find((v) => v.labels["eip"] === A.eip)?.value;
}

test("the Prometheus counters only grow: a reset in the kernel (a rebind) adds its new counts", async () => {
  const metrics = new AgentMetrics();
  let bindings: Binding[] = [A];
  let kernel = new Map<string, TrafficCounts>([[A.eip, counts(1000, 500)]]);
  const monitor = new TrafficMonitor({
    reader: { read: () => Promise.resolve(kernel) },
    bindings: () => bindings,
    metrics,
    logger: pino({ level: "silent" }),
  });
  assert.deepEqual(monitor.counts(A.eip, A.vmi), counts(0), "zeros before the first read");
  // The first read after a (re)start: what the kernel held, since the bind.
  await monitor.read();
  assert.deepEqual(monitor.counts(A.eip, A.vmi), counts(1000, 500));
  assert.equal(await exported(metrics, "kube_eip_agent_eip_rx_bytes_total"), 1000);
  kernel = new Map([[A.eip, counts(1500, 600)]]);
  await monitor.read();
  assert.equal(await exported(metrics, "kube_eip_agent_eip_rx_bytes_total"), 1500);
  assert.equal(await exported(metrics, "kube_eip_agent_eip_tx_packets_total"), 6);
  // Unbound and bound again between two reads: the kernel starts from zero.
  kernel = new Map([[A.eip, counts(200)]]);
  await monitor.read();
  assert.equal(await exported(metrics, "kube_eip_agent_eip_rx_bytes_total"), 1700);
  assert.deepEqual(monitor.counts(A.eip, A.vmi), counts(200), "eipctl shows the binding's own");
  // Bound to another VMI: a new binding, whose counts are its own.
  bindings = [{ eip: A.eip, vmi: "10.244.1.99" }];
  kernel = new Map([[A.eip, counts(300)]]);
  await monitor.read();
  assert.equal(await exported(metrics, "kube_eip_agent_eip_rx_bytes_total"), 2000);
  assert.deepEqual(monitor.counts(A.eip, A.vmi), counts(0), "not the old binding's");
  // Unbound: the series keeps its total.
  bindings = [];
  kernel = new Map();
  await monitor.read();
  assert.equal(await exported(metrics, "kube_eip_agent_eip_rx_bytes_total"), 2000);
});

test("a failed read keeps the last one and is counted", async () => {
  const metrics = new AgentMetrics();
  let fail = false;
  const monitor = new TrafficMonitor({
    reader: {
      read: () =>
        fail
          ? Promise.reject(new Error("ipset: Kernel error"))
          : Promise.resolve(new Map([[A.eip, counts(100)]])),
    },
    bindings: () => [A],
    metrics,
    logger: pino({ level: "silent" }),
  });
  await monitor.read();
  fail = true;
  await monitor.read();
  assert.deepEqual(monitor.counts(A.eip, A.vmi), counts(100));
  const errors = await metrics.registry
    .getSingleMetric("kube_eip_agent_traffic_read_errors_total")
    ?.get();
  assert.equal(errors?.values[0]?.value, 1);
});
