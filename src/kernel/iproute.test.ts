import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { FakeRunner, commandLine, failure } from "./fake-runner.js";
import { RouteManager, failedBatchLines, routeDesired, type RouteDesired } from "./iproute.js";
import {
  parseAddresses,
  parseArpRoutes,
  parseProxies,
  parseRoutes,
  parseRules,
  routeKey,
} from "./iproute-parse.js";
import { ensureRouteTableName } from "./rt-tables.js";
import { SysctlWriter } from "./sysctl.js";
import { KernelError, Phase } from "./manager.js";
import { TEST_PLAN_CONFIG, TEST_ROUTE_OPTIONS } from "../model/test-plan-config.js";

// Captured with iproute2 6.1.0 in a throwaway netns. Table 1001 holds the desired routes
// plus a /32 throw, a tos route, a metric route and an unreachable route; the rules include
// a stale VMI (10.0.0.12), a rule with an extra selector (iif), and foreign rules (priority
// 500, table 1002); eth1 has the node's 192.168.18.11/24, a foreign 10.10.0.5/16, EIP /32s
// an EIP the previous version added with the network's prefix (192.168.18.101/24), and a
// foreign VIP in the EIP network without our label (192.168.18.150/32, keepalived's).
const ROUTES = `[{"dst":"default","gateway":"192.168.18.1","dev":"eth1","flags":[]},{"type":"throw","dst":"10.1.2.3","flags":[]},{"dst":"10.5.0.0/16","tos":"0x10","dev":"eth1","scope":"link","flags":[]},{"dst":"10.7.0.0/16","gateway":"192.168.18.1","dev":"eth1","metric":100,"flags":[]},{"type":"unreachable","dst":"10.8.0.0/16","flags":[]},{"type":"throw","dst":"10.96.0.0/12","flags":[]},{"type":"throw","dst":"10.244.0.0/16","flags":[]},{"dst":"192.168.18.0/24","dev":"eth1","scope":"link","flags":[]}]`;
const RULES = `[{"priority":0,"src":"all","table":"255"},{"priority":500,"src":"10.0.0.0","srclen":8,"table":"254"},{"priority":1001,"src":"10.0.0.1","table":"1001"},{"priority":1001,"src":"10.0.0.11","table":"1001"},{"priority":1001,"src":"10.0.0.12","table":"1001"},{"priority":1001,"src":"10.0.0.1","iif":"eth1","table":"1001"},{"priority":1001,"src":"10.0.0.13","table":"1002"},{"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]`;
const ADDRS = `[{"ifindex":3,"link":"eth1-peer","ifname":"eth1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"192.168.18.11","prefixlen":24,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.100","prefixlen":32,"scope":"global","label":"eth1:eip","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.102","prefixlen":32,"scope":"global","label":"eth1:eip","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.150","prefixlen":32,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"10.10.0.5","prefixlen":16,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.101","prefixlen":24,"scope":"global","secondary":true,"label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]`;
// Captured the same way: the proxy entries of eth1 (a foreign 10.9.9.9, our stale EIP
// 192.168.18.102, our wanted 192.168.18.100, a foreign unmarked 192.168.18.150), the main table's routes with protocol 225 (a
// /26, EIP host routes through cni0, one through eth0, one with a metric, one via a
// gateway).
const PROXIES = `[{"dst":"10.9.9.9","proxy":null},{"dst":"192.168.18.102","proxy":null,"protocol":"225"},{"dst":"192.168.18.100","proxy":null,"protocol":"225"},{"dst":"192.168.18.150","proxy":null}]`;
const ARP_ROUTES = `[{"dst":"192.168.18.64/26","dev":"cni0","scope":"link","flags":[]},{"dst":"192.168.18.100","dev":"cni0","scope":"link","flags":[]},{"dst":"192.168.18.101","dev":"eth0","scope":"link","flags":[]},{"dst":"192.168.18.102","dev":"cni0","scope":"link","metric":100,"flags":[]},{"dst":"192.168.18.103","gateway":"10.244.1.10","dev":"cni0","flags":[]}]`;

const ROUTE_CMD = "ip -json route show table 1001";
const RULE_CMD = "ip -json -N rule show";
const ADDR_CMD = "ip -json -4 addr show dev eth1";
const PROXY_CMD = "ip -4 -json neigh show proxy dev eth1";
const ARP_ROUTE_CMD = "ip -json route show table main proto 225";
const READS = [ROUTE_CMD, RULE_CMD, ADDR_CMD, PROXY_CMD, ARP_ROUTE_CMD];
const BATCH_CMD = "ip -force -batch -";

const CONFIG: PlanConfig = { ...TEST_PLAN_CONFIG, internalNets: ["10.244.0.0/16", "10.96.0.0/12"] };

const OPTIONS = TEST_ROUTE_OPTIONS;

const TWO: Binding[] = [
  { eip: "192.168.18.100", vmi: "10.0.0.1" },
  { eip: "192.168.18.101", vmi: "10.0.0.11" },
];

function desired(bindings: Binding[], config: PlanConfig = CONFIG): RouteDesired {
  return routeDesired(plan(config, bindings));
}

function kernel(routes: string, rules: string, addrs: string): FakeRunner {
  return new FakeRunner().on(ROUTE_CMD, routes).on(RULE_CMD, rules).on(ADDR_CMD, addrs);
}

/** The stdin of the (last) batch call. */
function batchInput(runner: FakeRunner): string {
  const batches = runner.calls.filter((c) => commandLine(c) === BATCH_CMD);
  return batches.at(-1)?.input ?? "";
}

/** An `ip -json -4 addr show` answer for eth1 with these addresses. */
function addrJson(
  addrs: { local: string; prefixlen: number; secondary?: boolean; label?: string }[],
): string {
  return JSON.stringify([
    {
      ifindex: 3,
      ifname: "eth1",
      addr_info: addrs.map((a) => ({ family: "inet", scope: "global", label: "eth1", ...a })),
    },
  ]);
}

describe("iproute parsers", () => {
  it("reads proxy entries and our main-table routes", () => {
    assert.deepEqual(parseProxies(PROXIES), [
      { address: "10.9.9.9", protocol: undefined },
      { address: "192.168.18.102", protocol: 225 },
      { address: "192.168.18.100", protocol: 225 },
      { address: "192.168.18.150", protocol: undefined },
    ]);
    assert.deepEqual(parseArpRoutes(ARP_ROUTES, 225), [
      {
        address: undefined,
        dev: undefined,
        del: "route del 192.168.18.64/26 table main proto 225",
      },
      {
        address: "192.168.18.100",
        dev: "cni0",
        del: "route del 192.168.18.100/32 table main proto 225",
      },
      {
        address: "192.168.18.101",
        dev: "eth0",
        del: "route del 192.168.18.101/32 table main proto 225",
      },
      {
        address: undefined,
        dev: undefined,
        del: "route del 192.168.18.102/32 table main metric 100 proto 225",
      },
      {
        address: "192.168.18.103",
        dev: undefined,
        del: "route del 192.168.18.103/32 table main proto 225",
      },
    ]);
  });

  it("reads routes with their identity, comparison key and delete line", () => {
    const routes = parseRoutes(ROUTES, 1001);
    assert.deepEqual(
      routes.map((r) => [r.key, r.del]),
      [
        ["via default 192.168.18.1 eth1", "route del default table 1001"],
        ["throw 10.1.2.3/32", "route del 10.1.2.3/32 table 1001"],
        ["link 10.5.0.0/16 eth1 tos 0x10 metric 0", "route del 10.5.0.0/16 table 1001 tos 0x10"],
        [
          "via 10.7.0.0/16 192.168.18.1 eth1 tos 0 metric 100",
          "route del 10.7.0.0/16 table 1001 metric 100",
        ],
        [
          `other ${JSON.stringify({ type: "unreachable", dst: "10.8.0.0/16", flags: [] })}`,
          "route del 10.8.0.0/16 table 1001",
        ],
        ["throw 10.96.0.0/12", "route del 10.96.0.0/12 table 1001"],
        ["throw 10.244.0.0/16", "route del 10.244.0.0/16 table 1001"],
        ["link 192.168.18.0/24 eth1", "route del 192.168.18.0/24 table 1001"],
      ],
    );
    assert.equal(routes[0]?.identity, "default tos 0 metric 0");
  });

  it("keys desired routes like kernel routes", () => {
    assert.deepEqual(plan(CONFIG, []).routes.map(routeKey), [
      "link 192.168.18.0/24 eth1",
      "via default 192.168.18.1 eth1",
      "throw 10.244.0.0/16",
      "throw 10.96.0.0/12",
    ]);
  });

  it("keeps only our rules (priority 1001, table 1001 or eip_route)", () => {
    const rules = parseRules(RULES, { table: 1001, priority: 1001 });
    assert.deepEqual(
      rules.map((r) => [r.key.startsWith("other ") ? "other" : r.key, r.exact, r.del]),
      [
        ["from 10.0.0.1/32", true, "rule del from 10.0.0.1/32 lookup 1001 priority 1001"],
        ["from 10.0.0.11/32", true, "rule del from 10.0.0.11/32 lookup 1001 priority 1001"],
        ["from 10.0.0.12/32", true, "rule del from 10.0.0.12/32 lookup 1001 priority 1001"],
        ["other", true, "rule del from 10.0.0.1/32 iif eth1 lookup 1001 priority 1001"],
      ],
    );
    // Without -N, ip shows the name from rt_tables.
    const named = RULES.replaceAll('"table":"1001"', '"table":"eip_route"');
    assert.equal(parseRules(named, { table: 1001, priority: 1001 }).length, 4);
    assert.equal(parseRules(named, { table: 1001, priority: 1001, tableName: "other" }).length, 0);
  });

  it("marks rules whose delete would be a wildcard as inexact", () => {
    const rules = parseRules(
      JSON.stringify([
        { priority: 1001, src: "all", table: "1001" },
        { priority: 1001, src: "10.0.0.5", ipproto: "tcp", table: "1001" },
        { priority: 1001, src: "10.0.0.0", srclen: 8, table: "1001" },
      ]),
      { table: 1001, priority: 1001 },
    );
    assert.deepEqual(
      rules.map((r) => [r.exact, r.del]),
      [
        [false, "rule del from all lookup 1001 priority 1001"],
        [false, "rule del from 10.0.0.5/32 lookup 1001 priority 1001"],
        [true, "rule del from 10.0.0.0/8 lookup 1001 priority 1001"],
      ],
    );
  });

  it("reads the device's IPv4 addresses", () => {
    assert.deepEqual(parseAddresses(ADDRS), [
      { address: "192.168.18.11", prefix: 24, secondary: false, label: "eth1" },
      { address: "192.168.18.100", prefix: 32, secondary: false, label: "eth1:eip" },
      { address: "192.168.18.102", prefix: 32, secondary: false, label: "eth1:eip" },
      { address: "192.168.18.150", prefix: 32, secondary: false, label: "eth1" },
      { address: "10.10.0.5", prefix: 16, secondary: false, label: "eth1" },
      { address: "192.168.18.101", prefix: 24, secondary: true, label: "eth1" },
    ]);
  });

  it("finds the failed lines of a batch", () => {
    const stderr =
      "RTNETLINK answers: No such file or directory\nCommand failed -:2\n" +
      "Error: ipv4: Address already assigned.\nCommand failed -:14\n";
    assert.deepEqual(failedBatchLines(stderr), [2, 14]);
    assert.deepEqual(failedBatchLines(""), []);
  });
});

describe("RouteManager", () => {
  it("writes the difference in one batch, in phase order", async () => {
    const runner = kernel(ROUTES, RULES, ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 9);
    assert.deepEqual(runner.lines(), [...READS, BATCH_CMD]);
    assert.equal(
      batchInput(runner),
      [
        "route del 10.1.2.3/32 table 1001",
        "route del 10.5.0.0/16 table 1001 tos 0x10",
        "route del 10.7.0.0/16 table 1001 metric 100",
        "route del 10.8.0.0/16 table 1001",
        // Rules with extra selectors go first: `rule del` treats missing selectors as wildcards.
        "rule del from 10.0.0.1/32 iif eth1 lookup 1001 priority 1001",
        "rule del from 10.0.0.12/32 lookup 1001 priority 1001",
        // The /24 EIP of the previous version: the /32 comes first, then the /24 goes.
        "address add 192.168.18.101/32 dev eth1 label eth1:eip",
        "address del 192.168.18.102/32 dev eth1",
        "address del 192.168.18.101/24 dev eth1",
        "",
      ].join("\n"),
    );
  });

  it("tells which EIP addresses a successful write added or removed, and only those", async () => {
    const told: string[] = [];
    const runner = kernel("[]", "[]", addrJson([{ local: "192.168.18.100", prefixlen: 32 }])).on(
      BATCH_CMD,
      "",
    );
    const manager = new RouteManager(runner, {
      ...OPTIONS,
      onEipsArrived: (a) => told.push(`arrived ${a.join(" ")}`),
      onEipsLeft: (a) => told.push(`left ${a.join(" ")}`),
    });
    manager.setDesired(desired(TWO));
    await manager.apply({ reread: false });
    assert.deepEqual(told, ["arrived 192.168.18.101"], "192.168.18.100 was already there");
    await manager.apply({ reread: false });
    assert.equal(told.length, 1, "nothing new: nothing told");
    manager.setDesired(desired(TWO.slice(1)));
    await manager.apply({ reread: false });
    assert.deepEqual(told.slice(1), ["left 192.168.18.100"]);
  });

  it("builds a fresh node: link route before the default route", async () => {
    const runner = new FakeRunner()
      .on(
        ROUTE_CMD,
        failure(ROUTE_CMD, "Error: ipv4: FIB table does not exist.\nDump terminated\n", 2),
      )
      .on(RULE_CMD, RULES.replace(/\{"priority":1001[^}]*\},/g, ""))
      .on(ADDR_CMD, addrJson([{ local: "192.168.18.11", prefixlen: 24 }]));
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 8);
    assert.equal(
      batchInput(runner),
      [
        "route replace 192.168.18.0/24 dev eth1 scope link table 1001",
        "route replace default via 192.168.18.1 dev eth1 table 1001",
        "route replace throw 10.244.0.0/16 table 1001",
        "route replace throw 10.96.0.0/12 table 1001",
        "rule add from 10.0.0.1/32 lookup 1001 priority 1001",
        "rule add from 10.0.0.11/32 lookup 1001 priority 1001",
        "address add 192.168.18.100/32 dev eth1 label eth1:eip",
        "address add 192.168.18.101/32 dev eth1 label eth1:eip",
        "",
      ].join("\n"),
    );
  });

  it("keeps its belief: a second apply runs nothing, a bind writes two lines", async () => {
    const runner = new FakeRunner()
      .on(ROUTE_CMD, "[]")
      .on(RULE_CMD, "[]")
      .on(ADDR_CMD, addrJson([{ local: "192.168.18.11", prefixlen: 24 }]));
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    await manager.apply({ reread: false });
    runner.clear();
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), []);
    manager.setDesired(desired([...TWO, { eip: "192.168.18.7", vmi: "10.0.0.7" }]));
    assert.equal(await manager.apply({ reread: false }), 2);
    assert.deepEqual(runner.lines(), [BATCH_CMD]);
    assert.equal(
      runner.calls[0]?.input,
      "rule add from 10.0.0.7/32 lookup 1001 priority 1001\naddress add 192.168.18.7/32 dev eth1 label eth1:eip\n",
    );
    runner.clear();
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 2);
    assert.equal(
      runner.calls[0]?.input,
      "rule del from 10.0.0.7/32 lookup 1001 priority 1001\naddress del 192.168.18.7/32 dev eth1\n",
    );
  });

  it("compares exactly: unbinding 10.0.0.1 leaves 10.0.0.11 alone", async () => {
    const runner = kernel(ROUTES, RULES, ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired([{ eip: "192.168.18.101", vmi: "10.0.0.11" }]));
    await manager.apply({ reread: false });
    const input = batchInput(runner);
    assert.match(input, /^rule del from 10\.0\.0\.1\/32 lookup 1001 priority 1001$/m);
    assert.doesNotMatch(input, /10\.0\.0\.11/);
    assert.match(input, /^address del 192\.168\.18\.100\/32 dev eth1$/m);
  });

  it("never touches the node's own or foreign addresses", async () => {
    const runner = kernel(ROUTES, RULES, ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired([]));
    await manager.apply({ reread: false });
    const input = batchInput(runner);
    assert.doesNotMatch(input, /192\.168\.18\.11\/|10\.10\.0\.5|192\.168\.18\.101\/24/);
    // A VIP in the EIP network without our label is someone else's, even with no binding.
    assert.doesNotMatch(input, /192\.168\.18\.150/);
    assert.match(input, /address del 192\.168\.18\.100\/32 dev eth1\n/);
    assert.doesNotMatch(input, /priority 500|lookup 1002/);
  });

  it("holds no addresses with ARP poisoning, and removes ours", async () => {
    const runner = kernel(ROUTES, RULES, ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO, { ...CONFIG, arpPoisoning: true }));
    await manager.apply({ reread: false });
    const input = batchInput(runner);
    assert.deepEqual(
      input.split("\n").filter((l) => l.startsWith("address")),
      ["address del 192.168.18.100/32 dev eth1", "address del 192.168.18.102/32 dev eth1"],
    );
  });

  it("turns on promote_secondaries before deleting an adopted primary /24", async () => {
    const runner = kernel(
      "[]",
      "[]",
      addrJson([
        { local: "192.168.18.100", prefixlen: 24 },
        { local: "192.168.18.11", prefixlen: 24, secondary: true },
      ]),
    );
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired({
      routes: [],
      ruleSources: [],
      gatewayAddresses: ["192.168.18.100"],
      arpProxy: undefined,
    });
    assert.equal(await manager.apply({ reread: false }), 2);
    assert.deepEqual(runner.lines().slice(READS.length), [
      "sysctl -w net/ipv4/conf/eth1/promote_secondaries=1",
      BATCH_CMD,
    ]);
    assert.equal(
      batchInput(runner),
      "address add 192.168.18.100/32 dev eth1 label eth1:eip\naddress del 192.168.18.100/24 dev eth1\n",
    );
    // Secondaries may have been promoted: the next apply reads again.
    runner.clear();
    runner.on(
      ADDR_CMD,
      addrJson([
        { local: "192.168.18.11", prefixlen: 24 },
        { local: "192.168.18.100", prefixlen: 32, label: "eth1:eip" },
      ]),
    );
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines().slice(0, READS.length), READS);
  });

  it("with --proc-sys, promote_secondaries is written as a file, never with sysctl", async () => {
    // The unprivileged DaemonSet has no writable /proc/sys: `sysctl -w` would fail there.
    const dir = await mkdtemp(join(tmpdir(), "kube-eip-procsys-"));
    const key = join(dir, "net/ipv4/conf/eth1/promote_secondaries");
    try {
      await mkdir(dirname(key), { recursive: true });
      await writeFile(key, "0\n");
      const runner = kernel(
        "[]",
        "[]",
        addrJson([
          { local: "192.168.18.100", prefixlen: 24 },
          { local: "192.168.18.11", prefixlen: 24, secondary: true },
        ]),
      );
      const sysctl = new SysctlWriter(runner, { procSysDir: dir });
      const manager = new RouteManager(runner, { ...OPTIONS, sysctl });
      manager.setDesired({
        routes: [],
        ruleSources: [],
        gatewayAddresses: ["192.168.18.100"],
        arpProxy: undefined,
      });
      assert.equal(await manager.apply({ reread: false }), 2);
      assert.equal(await readFile(key, "utf8"), "1\n");
      assert.deepEqual(runner.lines().slice(READS.length), [BATCH_CMD]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("maps failed batch lines to the lowest failing phase", async () => {
    const batchFailure = (stderr: string) =>
      kernel("[]", "[]", addrJson([])).on(BATCH_CMD, failure(BATCH_CMD, stderr));
    // Lines: 4 routes, 2 rules, 2 addresses.
    for (const [stderr, phase] of [
      ["Error: ipv4: Address already assigned.\nCommand failed -:8\n", Phase.Address],
      [
        "Error: Nexthop has invalid gateway.\nCommand failed -:2\nCommand failed -:7\n",
        Phase.PolicyRouting,
      ],
      ["RTNETLINK answers: File exists\nCommand failed -:5\n", Phase.PolicyRouting],
      ["something else went wrong\n", Phase.PolicyRouting],
    ] as const) {
      const manager = new RouteManager(batchFailure(stderr), OPTIONS);
      manager.setDesired(desired(TWO));
      await assert.rejects(manager.apply({ reread: false }), (err: unknown) => {
        assert.ok(err instanceof KernelError);
        assert.equal(err.phase, phase, stderr);
        return true;
      });
    }
  });

  it("forgets its belief after a failure", async () => {
    const runner = kernel("[]", "[]", addrJson([])).on(
      BATCH_CMD,
      failure(BATCH_CMD, "Command failed -:1\n"),
    );
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    await assert.rejects(manager.apply({ reread: false }));
    runner.on(BATCH_CMD, "");
    runner.clear();
    await manager.apply({ reread: false });
    assert.deepEqual(runner.lines(), [...READS, BATCH_CMD]);
  });

  it("fails a read of a missing gateway device with Phase.Address", async () => {
    const runner = kernel("[]", "[]", "").on(
      ADDR_CMD,
      failure(ADDR_CMD, 'Device "eth1" does not exist.\n'),
    );
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    await assert.rejects(manager.apply({ reread: false }), {
      name: "KernelError",
      phase: Phase.Address,
    });
  });

  it("rejects what ip could not parse before writing anything", async () => {
    for (const [bad, phase] of [
      [{ ...desired(TWO), gatewayAddresses: ["300.1.1.1"] }, Phase.Address],
      [{ ...desired(TWO), ruleSources: ["10.0.0.1 lookup main"] }, Phase.PolicyRouting],
      [
        { ...desired(TWO), routes: [{ kind: "link", dst: "10.0.0.0/8", dev: "eth1\nrule flush" }] },
        Phase.PolicyRouting,
      ],
    ] as const) {
      const runner = kernel("[]", "[]", addrJson([]));
      const manager = new RouteManager(runner, OPTIONS);
      manager.setDesired(bad as RouteDesired);
      await assert.rejects(manager.apply({ reread: false }), { name: "KernelError", phase });
      assert.ok(!runner.lines().includes(BATCH_CMD));
    }
  });

  it("replaces a route whose kind changed instead of deleting it", async () => {
    const runner = kernel(
      JSON.stringify([{ dst: "10.244.0.0/16", dev: "eth1", scope: "link", flags: [] }]),
      "[]",
      addrJson([]),
    );
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired({
      routes: [{ kind: "throw", dst: "10.244.0.0/16" }],
      ruleSources: [],
      gatewayAddresses: [],
      arpProxy: undefined,
    });
    assert.equal(await manager.apply({ reread: false }), 1);
    assert.equal(batchInput(runner), "route replace throw 10.244.0.0/16 table 1001\n");
  });
});

describe("ensureRouteTableName", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "keip-rt-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates the directory and file when missing, then leaves it alone", async () => {
    const path = join(dir, "new", "iproute2", "rt_tables");
    assert.equal(await ensureRouteTableName(path), true);
    const text = await readFile(path, "utf8");
    assert.match(text, /^254\tmain$/m);
    assert.match(text, /^1001\teip_route$/m);
    assert.equal(await ensureRouteTableName(path), false);
    assert.equal(await readFile(path, "utf8"), text);
  });

  it("matches whole fields only and keeps the existing lines and mode", async () => {
    const path = join(dir, "rt_tables");
    const original = "255\tlocal\n10011 eip_route\n1001 eip_route2\n# 1001 eip_route\n100 other";
    await writeFile(path, original, { mode: 0o640 });
    assert.equal(await ensureRouteTableName(path, 1001, "eip_route"), true);
    assert.equal(await readFile(path, "utf8"), `${original}\n1001\teip_route\n`);
    assert.equal((await stat(path)).mode & 0o777, 0o640);
    assert.equal(await ensureRouteTableName(path, 1001, "eip_route"), false);
  });

  it("accepts an existing mapping in any spacing or in hex", async () => {
    const path = join(dir, "rt_tables.hex");
    await writeFile(path, "0x3e9   eip_route   # ours\n");
    assert.equal(await ensureRouteTableName(path), false);
  });
});

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
    const told: string[] = [];
    const runner = arpKernel(PROXIES, ARP_ROUTES);
    const manager = new RouteManager(runner, {
      ...OPTIONS,
      onEipsArrived: (a) => told.push(`arrived ${a.join(" ")}`),
      onEipsLeft: (a) => told.push(`left ${a.join(" ")}`),
    });
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
    assert.deepEqual(told, ["left 192.168.18.102", "arrived 192.168.18.101"]);

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
    runner.clear();
    manager.setDesired(desired(TWO.slice(1), POISONING));
    await manager.apply({ reread: false });
    assert.deepEqual(arpLines(runner), [
      "neigh del proxy 192.168.18.100 dev eth1",
      "neigh del proxy 192.168.18.7 dev eth1",
      "route del 192.168.18.100/32 table main proto 225",
      "route del 192.168.18.7/32 table main proto 225",
    ]);
    assert.deepEqual(told.slice(2), ["arrived 192.168.18.7", "left 192.168.18.100 192.168.18.7"]);
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

describe("RouteManager read/adopt", () => {
  /** Table 1001, the rules and the addresses once TWO is applied. */
  const APPLIED_ROUTES = JSON.stringify([
    { dst: "default", gateway: "192.168.18.1", dev: "eth1", flags: [] },
    { type: "throw", dst: "10.96.0.0/12", flags: [] },
    { type: "throw", dst: "10.244.0.0/16", flags: [] },
    { dst: "192.168.18.0/24", dev: "eth1", scope: "link", flags: [] },
  ]);
  const ruleJson = (sources: string[]) =>
    JSON.stringify(sources.map((src) => ({ priority: 1001, src, table: "1001" })));
  const APPLIED_ADDRS = addrJson([
    { local: "192.168.18.11", prefixlen: 24 },
    { local: "192.168.18.100", prefixlen: 32 },
    { local: "192.168.18.101", prefixlen: 32 },
  ]);

  it("reads without touching the belief; adopt makes the next apply diff against it", async () => {
    let rules = ruleJson(["10.0.0.1", "10.0.0.11"]);
    const runner = new FakeRunner()
      .on(ROUTE_CMD, APPLIED_ROUTES)
      .on(RULE_CMD, () => rules)
      .on(ADDR_CMD, APPLIED_ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 0);
    rules = ruleJson(["10.0.0.1", "10.0.0.9", "10.0.0.11"]);
    runner.clear();
    const snapshot = await manager.read();
    assert.deepEqual(runner.lines(), READS);
    assert.equal(snapshot.rules.length, 3);
    assert.equal(await manager.apply({ reread: false }), 0, "the belief is untouched");
    manager.adopt(snapshot);
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 1);
    assert.deepEqual(runner.lines(), [BATCH_CMD]);
    assert.equal(runner.calls[0]?.input, "rule del from 10.0.0.9/32 lookup 1001 priority 1001\n");
    assert.equal(await manager.apply({ reread: false }), 0);
    // The snapshot was not changed by the apply: adopting it again sees the stale rule again.
    manager.adopt(snapshot);
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 1);
    assert.equal(runner.calls[0]?.input, "rule del from 10.0.0.9/32 lookup 1001 priority 1001\n");
  });

  it("lets a fresh manager write the difference from an adopted snapshot, without a read", async () => {
    const reader = new RouteManager(kernel(ROUTES, RULES, ADDRS), OPTIONS);
    reader.setDesired(desired(TWO));
    const snapshot = await reader.read();
    const runner = new FakeRunner();
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    manager.adopt(snapshot);
    assert.equal(await manager.apply({ reread: false }), 9);
    assert.deepEqual(runner.lines(), [BATCH_CMD]);
    assert.equal(
      runner.calls[0]?.input,
      [
        "route del 10.1.2.3/32 table 1001",
        "route del 10.5.0.0/16 table 1001 tos 0x10",
        "route del 10.7.0.0/16 table 1001 metric 100",
        "route del 10.8.0.0/16 table 1001",
        "rule del from 10.0.0.1/32 iif eth1 lookup 1001 priority 1001",
        "rule del from 10.0.0.12/32 lookup 1001 priority 1001",
        "address add 192.168.18.101/32 dev eth1 label eth1:eip",
        "address del 192.168.18.102/32 dev eth1",
        "address del 192.168.18.101/24 dev eth1",
        "",
      ].join("\n"),
    );
  });

  it("fails a read with the phase of the failing command and keeps the belief", async () => {
    const runner = kernel(APPLIED_ROUTES, ruleJson(["10.0.0.1", "10.0.0.11"]), APPLIED_ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 0);
    runner.on(ADDR_CMD, failure(ADDR_CMD, 'Device "eth1" does not exist.\n'));
    await assert.rejects(manager.read(), { name: "KernelError", phase: Phase.Address });
    runner.on(ADDR_CMD, APPLIED_ADDRS).on(RULE_CMD, "not json");
    await assert.rejects(manager.read(), { name: "KernelError", phase: Phase.PolicyRouting });
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), []);
  });
});
