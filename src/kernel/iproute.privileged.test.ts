// RouteManager against the real iproute2, inside a throwaway network namespace (needs root).
import assert from "node:assert/strict";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { RecordingRunner } from "./fake-runner.js";
import { RouteManager, routeDesired, type RouteDesired } from "./iproute.js";
import { ensureRouteTableName } from "./rt-tables.js";
import { KernelError, Phase } from "./manager.js";
import { addStandInDevice, createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";
import { TEST_BINDINGS, TEST_PLAN_CONFIG, TEST_ROUTE_OPTIONS } from "../model/test-plan-config.js";

const notRoot = process.getuid?.() !== 0;

const CONFIG: PlanConfig = {
  ...TEST_PLAN_CONFIG,
  internalNets: ["10.244.0.0/16", "10.96.0.0/12", "10.1.2.3/32"],
};

const OPTIONS = TEST_ROUTE_OPTIONS;

const PAIR = TEST_BINDINGS;

function desired(bindings: readonly Binding[], config: PlanConfig = CONFIG): RouteDesired {
  return routeDesired(plan(config, bindings));
}

/** A namespace with eth1 up, the node's own 192.168.18.11/24 and some foreign state. */
async function setUp(host: ExecRunner): Promise<NetnsRunner> {
  const ns = await createNetns(host);
  try {
    await addStandInDevice(host, ns.netns, "eth1");
    return ns;
  } catch (err) {
    await deleteNetns(host, ns.netns);
    throw err;
  }
}

async function lines(ns: NetnsRunner, args: string[]): Promise<string[]> {
  const { stdout } = await ns.run("ip", args);
  return stdout
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/** "a.b.c.d/n" of every IPv4 address on eth1, sorted. */
async function addresses(ns: NetnsRunner): Promise<string[]> {
  const { stdout } = await ns.run("ip", ["-json", "-4", "addr", "show", "dev", "eth1"]);
  const links = JSON.parse(stdout) as { addr_info: { local: string; prefixlen: number }[] }[];
  return links.flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`)).sort();
}

describe("RouteManager in a network namespace", { skip: notRoot ? "needs root" : false }, () => {
  const host = new ExecRunner();
  let ns: NetnsRunner;
  let runner: RecordingRunner;
  let m: RouteManager;

  const ROUTES_PAIR = [
    "default via 192.168.18.1 dev eth1",
    "throw 10.1.2.3",
    "throw 10.96.0.0/12",
    "throw 10.244.0.0/16",
    "192.168.18.0/24 dev eth1 scope link",
  ];

  async function assertExactly(
    bindings: readonly Binding[],
    foreignAddresses: string[],
  ): Promise<void> {
    assert.deepEqual(await lines(ns, ["route", "show", "table", "1001"]), ROUTES_PAIR);
    const rules = await lines(ns, ["rule", "show"]);
    assert.deepEqual(
      rules.filter((r) => r.startsWith("1001:")).sort(),
      [
        // The foreign rule at our priority, pointing elsewhere, stays.
        "1001:\tfrom 10.9.9.9 lookup main",
        ...bindings.map((b) => `1001:\tfrom ${b.vmi} lookup 1001`),
      ].sort(),
    );
    assert.ok(rules.includes("500:\tfrom 10.0.0.0/8 lookup main"));
    assert.deepEqual(
      await addresses(ns),
      [...foreignAddresses, ...bindings.map((b) => `${b.eip}/32`)].sort(),
    );
  }

  before(async () => {
    ns = await setUp(host);
    runner = new RecordingRunner(ns);
    await ns.run("ip", ["addr", "add", "192.168.18.11/24", "dev", "eth1"]);
    // The previous version's EIP, with the network's prefix: adopted and replaced by a /32.
    await ns.run("ip", ["addr", "add", "192.168.18.101/24", "dev", "eth1"]);
    await ns.run("ip", ["addr", "add", "10.10.0.5/16", "dev", "eth1"]);
    await ns.run("ip", ["rule", "add", "from", "10.9.9.9", "lookup", "main", "priority", "1001"]);
    await ns.run("ip", ["rule", "add", "from", "10.0.0.0/8", "lookup", "main", "priority", "500"]);
    m = new RouteManager(runner, OPTIONS);
  });

  after(async () => {
    if (ns !== undefined) await deleteNetns(host, ns.netns);
  });

  async function apply(bindings: readonly Binding[], reread = false): Promise<number> {
    m.setDesired(desired(bindings));
    runner.clear();
    return m.apply({ reread });
  }

  it("builds table 1001, the rules and the /32 EIPs, adopting the old /24", async () => {
    // Table 1001 does not exist yet: reading it is not an error.
    assert.equal(await apply(PAIR), 10);
    assert.deepEqual(runner.lines(), [
      "ip -json route show table 1001",
      "ip -json -N rule show",
      "ip -json -4 addr show dev eth1",
      "ip -4 -json neigh show proxy dev eth1",
      "ip -json route show table main proto 225",
      "ip -force -batch -",
    ]);
    await assertExactly(PAIR, ["192.168.18.11/24", "10.10.0.5/16"]);
  });

  it("writes nothing the second time, with or without a re-read", async () => {
    assert.equal(await apply(PAIR), 0);
    assert.equal(await apply(PAIR, true), 0);
    const fresh = new RouteManager(ns, OPTIONS);
    fresh.setDesired(desired(PAIR));
    assert.equal(await fresh.apply({ reread: false }), 0);
  });

  it("unbinding 10.0.0.1 removes exactly its rule and address", async () => {
    assert.equal(await apply(PAIR.slice(1)), 2);
    assert.equal(
      runner.calls[0]?.input,
      "rule del from 10.0.0.1/32 lookup 1001 priority 1001\naddress del 192.168.18.100/32 dev eth1\n",
    );
    await assertExactly(PAIR.slice(1), ["192.168.18.11/24", "10.10.0.5/16"]);
    assert.equal(await apply(PAIR), 2);
    await assertExactly(PAIR, ["192.168.18.11/24", "10.10.0.5/16"]);
  });

  it("repairs drift on a re-read", async () => {
    await ns.run("ip", ["rule", "del", "from", "10.0.0.11", "lookup", "1001", "priority", "1001"]);
    await ns.run("ip", [
      "rule",
      "add",
      "iif",
      "eth1",
      "from",
      "10.0.0.1",
      "lookup",
      "1001",
      "priority",
      "1001",
    ]);
    await ns.run("ip", ["addr", "del", "192.168.18.101/32", "dev", "eth1"]);
    // A stray address of ours (our label): removed. (An unlabeled one is someone else's.)
    await ns.run("ip", ["addr", "add", "192.168.18.102/32", "dev", "eth1", "label", "eth1:eip"]);
    await ns.run("ip", ["route", "del", "default", "table", "1001"]);
    await ns.run("ip", ["route", "add", "10.99.0.0/16", "dev", "eth1", "table", "1001"]);
    await ns.run("ip", ["route", "add", "unreachable", "10.98.0.0/16", "table", "1001"]);
    await ns.run("ip", ["route", "replace", "10.244.0.0/16", "dev", "eth1", "table", "1001"]);
    assert.equal(await apply(PAIR), 0, "the belief hides drift until a re-read");
    // default route, 10.244.0.0/16 back to throw, 2 stray routes, 2 rules, 2 addresses.
    assert.equal(await apply(PAIR, true), 8);
    await assertExactly(PAIR, ["192.168.18.11/24", "10.10.0.5/16"]);
  });

  it("handles a 10.0.0.1 / 10.0.0.11 swap exactly", async () => {
    const swapped: Binding[] = [
      { eip: "192.168.18.100", vmi: "10.0.0.11" },
      { eip: "192.168.18.101", vmi: "10.0.0.1" },
    ];
    // Same VMIs and EIPs: nothing to do for routing, rules or addresses.
    assert.equal(await apply(swapped), 0);
    assert.equal(await apply([{ eip: "192.168.18.100", vmi: "10.0.0.11" }]), 2);
    await assertExactly(
      [{ eip: "192.168.18.100", vmi: "10.0.0.11" }],
      ["192.168.18.11/24", "10.10.0.5/16"],
    );
    assert.equal(await apply(PAIR, true), 2);
  });

  it("maps a failing address line to Phase.Address and re-reads afterwards", async () => {
    // The belief goes stale: someone removes the address we are about to remove.
    await ns.run("ip", ["addr", "del", "192.168.18.100/32", "dev", "eth1"]);
    m.setDesired(desired(PAIR.slice(1)));
    await assert.rejects(m.apply({ reread: false }), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.phase, Phase.Address);
      assert.match(err.message, /line 2 \(address del 192\.168\.18\.100\/32 dev eth1\)/);
      assert.match(err.message, /Address not found/);
      return true;
    });
    // -force ran the other lines; the next apply reads the kernel and finds nothing to do.
    assert.equal(await apply(PAIR.slice(1)), 0);
    assert.ok(runner.lines().includes("ip -json -N rule show"));
    await assertExactly(PAIR.slice(1), ["192.168.18.11/24", "10.10.0.5/16"]);
    assert.equal(await apply(PAIR), 2);
  });

  it("maps a failing route line to Phase.PolicyRouting", async () => {
    m.setDesired({
      ...desired(PAIR),
      routes: [{ kind: "via", dst: "10.50.0.0/16", gateway: "172.30.0.1", dev: "eth1" }],
    });
    await assert.rejects(m.apply({ reread: false }), {
      name: "KernelError",
      phase: Phase.PolicyRouting,
    });
    assert.equal(await apply(PAIR), 5);
    await assertExactly(PAIR, ["192.168.18.11/24", "10.10.0.5/16"]);
  });
});

describe(
  "RouteManager adopting a primary /24 EIP",
  { skip: notRoot ? "needs root" : false },
  () => {
    const host = new ExecRunner();
    let ns: NetnsRunner;

    before(async () => {
      ns = await setUp(host);
    });

    after(async () => {
      if (ns !== undefined) await deleteNetns(host, ns.netns);
    });

    it("keeps the node's own secondary address when the old EIP was the primary", async () => {
      // The old EIP came first, so it is the primary of 192.168.18.0/24 and the node's own
      // address is its secondary: deleting the primary would take the secondary with it.
      await ns.run("ip", ["addr", "add", "192.168.18.100/24", "dev", "eth1"]);
      await ns.run("ip", ["addr", "add", "192.168.18.11/24", "dev", "eth1"]);
      const m = new RouteManager(ns, OPTIONS);
      m.setDesired(desired([{ eip: "192.168.18.100", vmi: "10.0.0.1" }]));
      assert.equal(await m.apply({ reread: false }), 8);
      assert.deepEqual(await addresses(ns), ["192.168.18.100/32", "192.168.18.11/24"]);
      const { stdout } = await ns.run("sysctl", ["-n", "net.ipv4.conf.eth1.promote_secondaries"]);
      assert.equal(stdout.trim(), "1");
      assert.equal(await m.apply({ reread: false }), 0);
    });
  },
);

describe(
  "RouteManager with the table name registered",
  { skip: notRoot ? "needs root" : false },
  () => {
    const host = new ExecRunner();
    let ns: NetnsRunner;
    let etc = "";

    before(async () => {
      ns = await setUp(host);
      // `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*: the namespace's own rt_tables.
      etc = join("/etc/netns", ns.netns);
      await mkdir(join(etc, "iproute2"), { recursive: true });
    });

    after(async () => {
      if (ns !== undefined) await deleteNetns(host, ns.netns);
      if (etc !== "") await rm(etc, { recursive: true, force: true });
    });

    it("still recognises its rules when ip shows them as eip_route", async () => {
      assert.equal(await ensureRouteTableName(join(etc, "iproute2", "rt_tables")), true);
      assert.equal(await ensureRouteTableName(join(etc, "iproute2", "rt_tables")), false);
      await ns.run("ip", ["addr", "add", "192.168.18.11/24", "dev", "eth1"]);
      const m = new RouteManager(ns, OPTIONS);
      m.setDesired(desired(PAIR));
      assert.ok((await m.apply({ reread: false })) > 0);
      const rules = await lines(ns, ["rule", "show"]);
      assert.ok(rules.includes("1001:\tfrom 10.0.0.1 lookup eip_route"), rules.join("\n"));
      const { stdout } = await ns.run("ip", ["-json", "rule", "show"]);
      assert.match(stdout, /"table":"eip_route"/);
      const fresh = new RouteManager(ns, OPTIONS);
      fresh.setDesired(desired(PAIR));
      assert.equal(await fresh.apply({ reread: true }), 0);
    });
  },
);

describe(
  "RouteManager answering ARP (--arp-poisoning)",
  { skip: notRoot ? "needs root" : false },
  () => {
    const host = new ExecRunner();
    const POISONING: PlanConfig = { ...CONFIG, arpPoisoning: true };
    let ns: NetnsRunner;

    before(async () => {
      ns = await setUp(host);
      await addStandInDevice(host, ns.netns, "cni0");
      await ns.run("ip", ["addr", "add", "10.244.1.1/24", "dev", "cni0"]);
      // Not ours: a proxy entry outside the EIP network, a route with another protocol.
      await ns.run("ip", ["neigh", "add", "proxy", "10.9.9.9", "dev", "eth1"]);
      await ns.run("ip", ["route", "add", "192.168.18.50/32", "dev", "cni0", "proto", "static"]);
    });

    after(async () => {
      if (ns !== undefined) await deleteNetns(host, ns.netns);
    });

    const proxies = () => lines(ns, ["neigh", "show", "proxy", "dev", "eth1"]);
    const arpRoutes = () => lines(ns, ["route", "show", "table", "main", "proto", "225"]);

    it("holds a proxy entry and a host route per EIP, and repairs drift", async () => {
      const m = new RouteManager(ns, OPTIONS);
      m.setDesired(desired(PAIR, POISONING));
      assert.ok((await m.apply({ reread: false })) > 0);
      assert.deepEqual(await addresses(ns), []);
      assert.deepEqual((await proxies()).sort(), [
        "10.9.9.9 proxy",
        "192.168.18.100 proxy proto 225",
        "192.168.18.101 proxy proto 225",
      ]);
      assert.deepEqual(await arpRoutes(), [
        "192.168.18.100 dev cni0 scope link",
        "192.168.18.101 dev cni0 scope link",
      ]);
      assert.equal(await m.apply({ reread: true }), 0, "a re-read finds nothing to do");

      // Drift: an entry and a route lost, a route of ours moved.
      await ns.run("ip", ["neigh", "del", "proxy", "192.168.18.100", "dev", "eth1"]);
      await ns.run("ip", ["route", "del", "192.168.18.101/32", "proto", "225"]);
      await ns.run("ip", ["route", "add", "192.168.18.101/32", "dev", "eth1", "proto", "225"]);
      assert.equal(await m.apply({ reread: true }), 2);
      assert.equal((await proxies()).length, 3);
      assert.deepEqual(await arpRoutes(), [
        "192.168.18.100 dev cni0 scope link",
        "192.168.18.101 dev cni0 scope link",
      ]);
    });

    it("refuses to take over someone else's route to an EIP", async () => {
      const m = new RouteManager(ns, OPTIONS);
      m.setDesired(desired([...PAIR, { eip: "192.168.18.50", vmi: "10.0.0.50" }], POISONING));
      await assert.rejects(m.apply({ reread: true }), {
        name: "KernelError",
        phase: Phase.Address,
      });
      assert.deepEqual(await lines(ns, ["route", "show", "192.168.18.50/32"]), [
        "192.168.18.50 dev cni0 proto static scope link",
      ]);
    });

    it("without ARP poisoning removes only its own entries and routes", async () => {
      const m = new RouteManager(ns, OPTIONS);
      m.setDesired(desired(PAIR));
      assert.ok((await m.apply({ reread: true })) > 0);
      assert.deepEqual(await proxies(), ["10.9.9.9 proxy"]);
      assert.deepEqual(await arpRoutes(), []);
      assert.deepEqual(await addresses(ns), ["192.168.18.100/32", "192.168.18.101/32"]);
      assert.deepEqual(await lines(ns, ["route", "show", "192.168.18.50/32"]), [
        "192.168.18.50 dev cni0 proto static scope link",
      ]);
    });
  },
);
