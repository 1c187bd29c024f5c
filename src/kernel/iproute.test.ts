import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { FakeRunner, failure } from "./fake-runner.js";
import { ArpArrivals } from "./arp-arrivals.js";
import { RouteManager, type RouteDesired } from "./iproute.js";
import { SysctlWriter } from "./sysctl.js";
import { KernelError, Phase } from "./manager.js";
import {
  ROUTES,
  RULES,
  ADDRS,
  ROUTE_CMD,
  RULE_CMD,
  ADDR_CMD,
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

/** The batch that takes the recorded ROUTES, RULES and ADDRS to TWO (two tests). */
const TWO_FROM_RECORDED = [
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
].join("\n");

describe("RouteManager", () => {
  it("writes the difference in one batch, in phase order", async () => {
    const runner = kernel(ROUTES, RULES, ADDRS);
    const manager = new RouteManager(runner, OPTIONS);
    manager.setDesired(desired(TWO));
    assert.equal(await manager.apply({ reread: false }), 9);
    assert.deepEqual(runner.lines(), [...READS, BATCH_CMD]);
    assert.equal(batchInput(runner), TWO_FROM_RECORDED);
  });

  it("records which EIP addresses a successful write added, and only those", async () => {
    const runner = kernel("[]", "[]", addrJson([{ local: "192.168.18.100", prefixlen: 32 }])).on(
      BATCH_CMD,
      "",
    );
    const arrivals = new ArpArrivals();
    const manager = new RouteManager(runner, { ...OPTIONS, arrivals });
    manager.setDesired(desired(TWO));
    await manager.apply({ reread: false });
    assert.deepEqual(arrivals.take(), ["192.168.18.101"], "192.168.18.100 was already there");
    await manager.apply({ reread: false });
    assert.deepEqual(arrivals.take(), [], "nothing new: nothing recorded");
    manager.setDesired(desired([{ eip: "192.168.18.7", vmi: "10.0.0.7" }]));
    await manager.apply({ reread: false });
    manager.setDesired(desired(TWO.slice(1)));
    await manager.apply({ reread: false });
    assert.deepEqual(
      arrivals.take(),
      ["192.168.18.101"],
      "192.168.18.7 arrived and left before it was taken; 192.168.18.101 came back",
    );
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
    assert.equal(runner.calls[0]?.input, TWO_FROM_RECORDED);
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
