// RouteManager deletes only what it marked (or adopted at start for a bound EIP) and never
// takes over an address or proxy entry of someone else's, with fakes of `ip`; the same
// against the real kernel is in iproute.privileged.test.ts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { FakeRunner, commandLine } from "./fake-runner.js";
import { RouteManager, routeDesired } from "./iproute.js";
import { KernelError, Phase } from "./manager.js";
import { TEST_PLAN_CONFIG, TEST_ROUTE_OPTIONS } from "../model/test-plan-config.js";

const ADDR_CMD = "ip -json -4 addr show dev eth1";
const PROXY_CMD = "ip -4 -json neigh show proxy dev eth1";
const BATCH_CMD = "ip -force -batch -";

const CONFIG: PlanConfig = { ...TEST_PLAN_CONFIG, internalNets: ["10.244.0.0/16"] };
const POISONING: PlanConfig = { ...CONFIG, arpPoisoning: true };
const OPTIONS = TEST_ROUTE_OPTIONS;

const ONE: Binding[] = [{ eip: "192.168.18.100", vmi: "10.244.1.10" }];
const TWO: Binding[] = [...ONE, { eip: "192.168.18.150", vmi: "10.244.1.11" }];

function addrs(list: { local: string; prefixlen: number; label?: string }[]): string {
  return JSON.stringify([
    {
      ifname: "eth1",
      addr_info: list.map((a) => ({ family: "inet", label: "eth1", ...a })),
    },
  ]);
}

function node(addresses: string, proxies = "[]"): FakeRunner {
  return new FakeRunner()
    .on("ip -json route show table 1001", "[]")
    .on("ip -json -N rule show", "[]")
    .on(ADDR_CMD, addresses)
    .on(PROXY_CMD, proxies)
    .on("ip -json route show table main proto 225", "[]")
    .on(BATCH_CMD, "");
}

function batches(runner: FakeRunner): string {
  return runner.calls
    .filter((c) => commandLine(c) === BATCH_CMD)
    .map((c) => c.input ?? "")
    .join("");
}

const NODE_24 = { local: "192.168.18.11", prefixlen: 24 };
const VIP = { local: "192.168.18.150", prefixlen: 32 };
const FOREIGN_PROXY = `[{"dst":"192.168.18.150","proxy":null}]`;

describe("RouteManager: ownership by mark", () => {
  it("keeps a foreign /32 in the EIP network across resyncs and an unbind, and deletes its own", async () => {
    const runner = node(addrs([NODE_24, VIP]));
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(routeDesired(plan(CONFIG, ONE)));
    await manager.apply({ reread: true });
    assert.match(batches(runner), /address add 192\.168\.18\.100\/32 dev eth1 label eth1:eip\n/);
    // The kernel now holds ours, marked: unbinding deletes it, and only it.
    runner.on(
      ADDR_CMD,
      addrs([NODE_24, VIP, { local: "192.168.18.100", prefixlen: 32, label: "eth1:eip" }]),
    );
    manager.setDesired(routeDesired(plan(CONFIG, [])));
    for (let i = 0; i < 3; i++) await manager.apply({ reread: true });
    assert.match(batches(runner), /address del 192\.168\.18\.100\/32 dev eth1\n/);
    assert.doesNotMatch(batches(runner), /192\.168\.18\.150/);
  });

  it("keeps a foreign proxy entry in the EIP network and marks its own with protocol 225", async () => {
    const runner = node(addrs([NODE_24]), FOREIGN_PROXY);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(routeDesired(plan(POISONING, ONE)));
    await manager.apply({ reread: true });
    manager.setDesired(routeDesired(plan(POISONING, [])));
    await manager.apply({ reread: true });
    assert.match(batches(runner), /neigh replace proxy 192\.168\.18\.100 dev eth1 protocol 225\n/);
    assert.doesNotMatch(batches(runner), /192\.168\.18\.150/);
  });

  it("never takes over a bound EIP that someone else holds, and still writes the others", async () => {
    for (const [config, addresses, proxies] of [
      [CONFIG, addrs([NODE_24, VIP]), "[]"],
      [CONFIG, addrs([NODE_24, { local: "192.168.18.150", prefixlen: 24 }]), "[]"],
      [POISONING, addrs([NODE_24]), FOREIGN_PROXY],
    ] as const) {
      const runner = node(addresses, proxies);
      const manager = new RouteManager(runner, OPTIONS);
      manager.setDesired(routeDesired(plan(config, ONE)));
      await manager.apply({ reread: true });
      // Bound later (not adopted at start): someone else's, whatever the binding says.
      manager.setDesired(routeDesired(plan(config, TWO)));
      await assert.rejects(
        manager.apply({ reread: true }),
        (err: unknown) =>
          err instanceof KernelError &&
          err.phase === Phase.Address &&
          /not taking over 192\.168\.18\.150/.test(err.message),
      );
      assert.doesNotMatch(batches(runner), /192\.168\.18\.150(?!\/24 dev eth1 scope)/);
      assert.match(batches(runner), /rule add from 10\.244\.1\.11\/32/, "the rest is written");
    }
  });

  it("adopts at start an earlier version's unmarked state of a bound EIP, and removes it on unbind", async () => {
    const old = { local: "192.168.18.100", prefixlen: 32 };
    const runner = node(addrs([NODE_24, old]), `[{"dst":"192.168.18.100","proxy":null}]`);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(routeDesired(plan(CONFIG, ONE)));
    await manager.apply({ reread: true });
    assert.doesNotMatch(batches(runner), /address/, "the address is adopted as it is");
    // Re-reads remember it as ours; an unbind deletes it (and the proxy entry it never had
    // as ours stays: an address is enough for the bound EIP).
    await manager.apply({ reread: true });
    manager.setDesired(routeDesired(plan(CONFIG, [])));
    await manager.apply({ reread: true });
    const addressLines = batches(runner)
      .split("\n")
      .filter((l) => /address|neigh/.test(l));
    assert.deepEqual(addressLines, ["address del 192.168.18.100/32 dev eth1"]);

    // With --arp-poisoning, its unmarked proxy entry is marked in place (no gap).
    const arp = node(addrs([NODE_24]), `[{"dst":"192.168.18.100","proxy":null}]`);
    const poisoned = new RouteManager(arp, OPTIONS);
    poisoned.setDesired(routeDesired(plan(POISONING, ONE)));
    await poisoned.apply({ reread: true });
    assert.match(batches(arp), /neigh replace proxy 192\.168\.18\.100 dev eth1 protocol 225\n/);
  });
});
