// RouteManager's ARP answers (arp-answers.ts), through RouteManager as the agent uses it.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type PlanConfig } from "../model/plan.js";
import { FakeRunner, failure } from "./fake-runner.js";
import { ArpArrivals } from "./arp-arrivals.js";
import { RouteManager } from "./iproute.js";
import { KernelError, Phase } from "./manager.js";
import {
  PROXIES,
  ARP_ROUTES,
  PROXY_CMD,
  ARP_ROUTE_CMD,
  READS,
  BATCH_CMD,
  CONFIG,
  OPTIONS,
  TWO,
  desired,
  kernel,
  batchInput,
  addrJson,
} from "./iproute-fixtures.js";

describe("RouteManager: ARP answers (--arp-poisoning)", () => {
  const POISONING: PlanConfig = { ...CONFIG, arpPoisoning: true };
  const NODE_ADDR = addrJson([{ local: "192.168.18.11", prefixlen: 24 }]);
  const arpKernel = (proxies: string, arpRoutes: string) =>
    kernel("[]", "[]", NODE_ADDR).on(PROXY_CMD, proxies).on(ARP_ROUTE_CMD, arpRoutes);
  const arpLines = (runner: FakeRunner) =>
    batchInput(runner)
      .split("\n")
      .filter((l) => /^(neigh|route (add|del|replace) \S+ (dev \S+ )?table main)/.test(l));

  it("answers for exactly the bound EIPs: a proxy entry and a host route each", async () => {
    const arrivals = new ArpArrivals();
    const runner = arpKernel(PROXIES, ARP_ROUTES);
    const manager = new RouteManager(runner, { ...OPTIONS, arrivals });
    manager.setDesired(desired(TWO, POISONING));
    await manager.apply({ reread: false });
    assert.deepEqual(runner.lines(), [...READS, BATCH_CMD]);
    assert.deepEqual(arpLines(runner), [
      // Ours, through the wrong device: replaced.
      "route replace 192.168.18.101/32 dev cni0 table main proto 225",
      "neigh replace proxy 192.168.18.101 dev eth1 protocol 225",
      // Stale entries go, the proxy entry before its route; 10.9.9.9 is not ours.
      "neigh del proxy 192.168.18.102 dev eth1",
      "route del 192.168.18.103/32 table main proto 225",
      "route del 192.168.18.64/26 table main proto 225",
      "route del 192.168.18.102/32 table main metric 100 proto 225",
    ]);
    assert.deepEqual(arrivals.take(), ["192.168.18.101"], "its proxy entry is new");

    // The belief holds: nothing to do; a bind adds a route and a proxy entry, an unbind
    // deletes them, proxy entry first.
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 0);
    manager.setDesired(desired([...TWO, { eip: "192.168.18.7", vmi: "10.0.0.7" }], POISONING));
    await manager.apply({ reread: false });
    assert.deepEqual(arpLines(runner), [
      "route add 192.168.18.7/32 dev cni0 table main proto 225",
      "neigh replace proxy 192.168.18.7 dev eth1 protocol 225",
    ]);
    assert.deepEqual(arrivals.take(), ["192.168.18.7"]);
    runner.clear();
    manager.setDesired(desired(TWO.slice(1), POISONING));
    await manager.apply({ reread: false });
    assert.deepEqual(arpLines(runner), [
      "neigh del proxy 192.168.18.100 dev eth1",
      "neigh del proxy 192.168.18.7 dev eth1",
      "route del 192.168.18.100/32 table main proto 225",
      "route del 192.168.18.7/32 table main proto 225",
    ]);
    assert.deepEqual(arrivals.take(), [], "an unbind brings nothing");
  });

  it("without ARP poisoning removes ours and keeps foreign proxy entries", async () => {
    const runner = arpKernel(PROXIES, ARP_ROUTES);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    await manager.apply({ reread: false });
    assert.deepEqual(runner.lines(), [...READS, BATCH_CMD]);
    assert.deepEqual(arpLines(runner), [
      "neigh del proxy 192.168.18.102 dev eth1",
      "neigh del proxy 192.168.18.100 dev eth1",
      "route del 192.168.18.100/32 table main proto 225",
      "route del 192.168.18.101/32 table main proto 225",
      "route del 192.168.18.103/32 table main proto 225",
      "route del 192.168.18.64/26 table main proto 225",
      "route del 192.168.18.102/32 table main metric 100 proto 225",
    ]);
  });

  it("refuses an EIP outside the EIP network or a bad route device, writing nothing", async () => {
    for (const arpProxy of [
      { eips: ["192.168.19.5"], routeDev: "cni0" },
      { eips: ["192.168.18.5"], routeDev: "eth1" },
      { eips: ["192.168.18.5"], routeDev: "cni0 x" },
    ]) {
      const runner = arpKernel("[]", "[]");
      const manager = new RouteManager(runner, OPTIONS);
      manager.setDesired({ ...desired([], POISONING), arpProxy });
      await assert.rejects(manager.apply({ reread: false }), {
        name: "KernelError",
        phase: Phase.Address,
      });
      assert.ok(!runner.lines().includes(BATCH_CMD));
    }
  });

  it("fails a route that someone else holds at the EIP with Phase.Address", async () => {
    const runner = arpKernel("[]", "[]").on(
      BATCH_CMD,
      failure(BATCH_CMD, "RTNETLINK answers: File exists\nCommand failed -:6\n"),
    );
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO.slice(0, 1), POISONING));
    // Lines: 4 routes of table 1001, a rule, a host route, a proxy entry.
    await assert.rejects(manager.apply({ reread: false }), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.phase, Phase.Address);
      assert.match(err.message, /line 6 \(route add 192\.168\.18\.100\/32 dev cni0/);
      return true;
    });
  });
});
