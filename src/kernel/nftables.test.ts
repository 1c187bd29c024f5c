// NftablesManager with a fake runner: what it writes, when it reads (the real nft:
// nftables.privileged.test.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Binding } from "../model/desired.js";
import { FakeRunner, failure } from "./fake-runner.js";
import { NftablesManager } from "./nftables.js";
import { IPV4, parseCountSet, parseTable, renderTable } from "./nftables-table.js";

const LIST = "nft -j list table ip kube_eip";
const NO_TABLE = failure(LIST, "Error: No such file or directory\nlist table ip kube_eip\n");
const NETS = ["10.244.0.0/16", "10.244.1.0/24", "10.96.0.0/12"];

function bindings(n: number): Binding[] {
  return Array.from({ length: n }, (_, i) => ({
    eip: `192.168.18.${i + 1}`,
    vmi: `10.0.0.${i + 1}`,
  }));
}

test("a first bind writes the whole table; the next one only its four elements", async () => {
  const runner = new FakeRunner().on(LIST, NO_TABLE);
  const m = new NftablesManager(runner);
  m.setDesired({ bindings: bindings(1), internalNets: NETS });
  await m.apply({ reread: false });
  const first = runner.calls.at(-1)?.input ?? "";
  assert.match(first, /^add table ip kube_eip\ndelete table ip kube_eip\ntable ip kube_eip \{/);
  // 10.244.1.0/24 lies inside 10.244.0.0/16: an interval set refuses the overlap.
  assert.match(first, /elements = \{ 10\.244\.0\.0\/16, 10\.96\.0\.0\/12 \}/);
  runner.clear();
  m.setDesired({ bindings: bindings(2), internalNets: NETS });
  assert.equal(await m.apply({ reread: false }), 4);
  assert.deepEqual(runner.lines(), ["nft -f -"]);
  assert.equal(
    runner.calls[0]?.input,
    [
      "add element ip kube_eip eips { 192.168.18.2 }",
      "add element ip kube_eip vmis { 10.0.0.2 }",
      "add element ip kube_eip eip_vmi { 192.168.18.2 : 10.0.0.2 }",
      "add element ip kube_eip vmi_eip { 10.0.0.2 : 192.168.18.2 }",
      "",
    ].join("\n"),
  );
  runner.clear();
  m.setDesired({ bindings: bindings(1), internalNets: NETS });
  await m.apply({ reread: false });
  assert.match(
    runner.calls[0]?.input ?? "",
    /^delete element ip kube_eip eips \{ 192\.168\.18\.2 \}/m,
  );
  assert.match(
    runner.calls[0]?.input ?? "",
    /^delete element ip kube_eip eip_vmi \{ 192\.168\.18\.2 \}$/m,
  );
});

test("a failed write forgets the belief: the next apply reads first", async () => {
  const runner = new FakeRunner().on(LIST, NO_TABLE);
  const m = new NftablesManager(runner);
  m.setDesired({ bindings: bindings(1), internalNets: NETS });
  await m.apply({ reread: false });
  runner.on("nft -f -", failure("nft -f -", "Error: Could not process rule"));
  m.setDesired({ bindings: bindings(2), internalNets: NETS });
  await assert.rejects(m.apply({ reread: false }), /nftables: .*Could not process rule/);
  runner.clear();
  await assert.rejects(m.apply({ reread: false }));
  assert.equal(runner.lines()[0], LIST);
});

test("no binding, no table, no nft: nothing to do", async () => {
  const missing = Object.assign(new Error("spawn nft ENOENT"), { code: "ENOENT" });
  const runner = new FakeRunner().on(LIST, missing);
  const m = new NftablesManager(runner);
  m.setDesired({ bindings: [], internalNets: NETS });
  assert.equal(await m.apply({ reread: true }), 0);
  assert.deepEqual(runner.lines(), [LIST]);
  m.setDesired({ bindings: bindings(1), internalNets: NETS });
  await assert.rejects(m.apply({ reread: true }), /ENOENT/);
});

test("the layout read back from its own rendering is whole; an unknown element is drift", () => {
  // nft -j prints what renderTable wrote like this (nft 1.0.6, abridged to the checked fields).
  const sets = (elems: unknown[]) => [
    { set: { name: "internal_nets", type: "ipv4_addr", flags: ["interval"], elem: elems } },
    { set: { name: "eips", type: "ipv4_addr" } },
    { set: { name: "vmis", type: "ipv4_addr" } },
    {
      map: {
        name: "eip_vmi",
        type: "ipv4_addr",
        map: "ipv4_addr",
        elem: [["1.2.3.4", "10.0.0.1"]],
      },
    },
    { map: { name: "vmi_eip", type: "ipv4_addr", map: "ipv4_addr" } },
  ];
  const chain = (name: string, type: string, hook: string, prio: number, comments: string[]) => [
    { chain: { name, type, hook, prio, policy: "accept" } },
    ...comments.map((comment) => ({ rule: { chain: name, comment } })),
  ];
  const chains = [
    ...chain("prerouting", "nat", "prerouting", -100, ["kube-eip dnat"]),
    ...chain("output", "nat", "output", -100, ["kube-eip dnat"]),
    ...chain("postrouting", "nat", "postrouting", 100, ["kube-eip snat", "kube-eip hairpin"]),
    ...chain("forward", "filter", "forward", -10, [
      "kube-eip vmi to outside",
      "kube-eip replies to vmi",
      "kube-eip outside to eip",
    ]),
    ...chain("input", "filter", "input", -10, ["kube-eip invalid to eip"]),
  ];
  const json = (elems: unknown[]) =>
    JSON.stringify({ nftables: [{ table: { name: "kube_eip" } }, ...sets(elems), ...chains] });
  const read = parseTable(IPV4, json([{ prefix: { addr: "10.0.0.0", len: 8 } }, "10.1.2.3"]));
  assert.equal(read.layoutOk, true);
  assert.deepEqual(read.elements.internal_nets, ["10.0.0.0/8", "10.1.2.3/32"]);
  assert.deepEqual(read.elements.eip_vmi, ["1.2.3.4 : 10.0.0.1"]);
  assert.equal(parseTable(IPV4, json([{ range: ["10.0.0.1", "10.0.0.9"] }])).layoutOk, false);
  // Every comment parseTable checks is one renderTable writes.
  const text = renderTable(IPV4, read.elements, { counters: false });
  for (const c of chains) if ("rule" in c) assert.ok(text.includes(`comment "${c.rule.comment}"`));
});

test("with counters: the counting sets and chains are the layout, their counts are read and carried over", async () => {
  const counted = (name: string, elem: unknown[]) => ({
    set: { name, type: "ipv4_addr", stmt: [{ counter: null }], elem },
  });
  const runner = new FakeRunner().on(LIST, NO_TABLE);
  const m = new NftablesManager(runner);
  m.setDesired({ bindings: bindings(1), internalNets: NETS, counters: true });
  await m.apply({ reread: false });
  const first = runner.calls.at(-1)?.input ?? "";
  assert.match(
    first,
    /set eip_rx \{\n\t\ttype ipv4_addr\n\t\tcounter\n\t\telements = \{ 192\.168\.18\.1 \}/,
  );
  assert.match(first, /chain count_in \{\n\t\ttype filter hook prerouting priority -150;/);
  assert.match(first, /chain count_out \{\n\t\ttype filter hook postrouting priority 110;/);
  assert.match(first, /ip saddr @eip_tx comment "kube-eip count out"/);
  runner.clear();
  m.setDesired({ bindings: bindings(2), internalNets: NETS, counters: true });
  assert.equal(await m.apply({ reread: false }), 6);
  assert.match(
    runner.calls[0]?.input ?? "",
    /^add element ip kube_eip eip_rx \{ 192\.168\.18\.2 \}$/m,
  );
  assert.match(
    runner.calls[0]?.input ?? "",
    /^add element ip kube_eip eip_tx \{ 192\.168\.18\.2 \}$/m,
  );

  // A read of the table as nft prints it: the counts come with the elements.
  const elem = (val: string, packets: number, bytes: number) => ({
    elem: { val, counter: { packets, bytes } },
  });
  const json = JSON.stringify({
    nftables: [
      { table: { name: "kube_eip" } },
      counted("eip_rx", [elem("192.168.18.1", 10, 1000)]),
      counted("eip_tx", [elem("192.168.18.1", 7, 700)]),
    ],
  });
  const read = parseTable(IPV4, json, { counters: true });
  assert.equal(read.layoutOk, false); // the other sets and the chains are missing
  assert.deepEqual(read.elements.eip_rx, ["192.168.18.1"]);
  assert.deepEqual(read.counts.eip_tx.get("192.168.18.1"), { packets: 7, bytes: 700 });
  // Without counters in the layout, a counting set is not ours.
  assert.equal(parseTable(IPV4, json, { counters: false }).counts.eip_rx.size, 0);
  // The rewrite that repairs the layout starts each element from the count it read.
  runner.on(LIST, json);
  runner.clear();
  m.setDesired({ bindings: bindings(1), internalNets: NETS, counters: true });
  await m.apply({ reread: true });
  assert.match(
    runner.calls.at(-1)?.input ?? "",
    /set eip_tx \{\n\t\ttype ipv4_addr\n\t\tcounter\n\t\telements = \{ 192\.168\.18\.1 counter packets 7 bytes 700 \}/,
  );
});

test("parseCountSet reads each element's counter and skips what it cannot read", () => {
  const text = JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      {
        set: {
          name: "eip_rx",
          elem: [
            { elem: { val: "192.168.18.1", counter: { packets: 2, bytes: 168 } } },
            { elem: { val: "192.168.18.2", counter: { packets: -1, bytes: 0 } } },
            "192.168.18.3",
          ],
        },
      },
    ],
  });
  const counts = parseCountSet(text);
  assert.deepEqual([...counts], [["192.168.18.1", { packets: 2, bytes: 168 }]]);
});
