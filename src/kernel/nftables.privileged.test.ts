// NftablesManager against the real nft, inside a throwaway network namespace (needs root).
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import type { Binding } from "../model/desired.js";
import { RecordingRunner } from "./fake-runner.js";
import { KernelError } from "./manager.js";
import { NftablesManager } from "./nftables.js";
import { createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";

const notRoot = process.getuid?.() !== 0;

const NETS = ["10.244.0.0/16", "10.96.0.0/12"];
const PAIR: Binding[] = [
  { eip: "192.168.18.100", vmi: "10.0.0.1" },
  { eip: "192.168.18.101", vmi: "10.0.0.11" },
];

/** Somebody else's table, like kube-proxy's: must survive everything. */
const FOREIGN = `table ip kube-proxy {
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; ip daddr 10.96.0.1 counter; }
}
`;

describe("NftablesManager in a network namespace", { skip: notRoot ? "needs root" : false }, () => {
  const host = new ExecRunner();
  let ns: NetnsRunner;
  let runner: RecordingRunner;

  before(async () => {
    ns = await createNetns(host);
    await ns.run("nft", ["-f", "-"], { input: FOREIGN });
  });
  after(async () => {
    if (ns !== undefined) await deleteNetns(host, ns.netns);
  });
  beforeEach(async () => {
    runner = new RecordingRunner(ns);
    await ns.run("nft", ["-f", "-"], {
      input: "add table ip kube_eip\ndelete table ip kube_eip\n",
    });
  });

  const table = async () =>
    (await ns.run("nft", ["list", "table", "ip", "kube_eip"])).stdout.replace(/\t/g, " ");
  const foreign = async () => (await ns.run("nft", ["list", "table", "ip", "kube-proxy"])).stdout;

  it("writes the table with both maps, and only the change afterwards", async () => {
    const before = await foreign();
    const m = new NftablesManager(runner);
    m.setDesired({ bindings: PAIR, internalNets: NETS });
    assert.equal(await m.apply({ reread: false }), 1);
    const text = await table();
    assert.match(
      text,
      /map eip_vmi \{[^}]*elements = \{ 192\.168\.18\.100 : 10\.0\.0\.1,\s*192\.168\.18\.101 : 10\.0\.0\.11 \}/,
    );
    assert.match(text, /map vmi_eip \{[^}]*10\.0\.0\.1 : 192\.168\.18\.100/);
    assert.match(text, /elements = \{ 10\.96\.0\.0\/12, 10\.244\.0\.0\/16 \}/);
    assert.match(text, /dnat to ip daddr map @eip_vmi/);
    assert.match(text, /ip daddr != @internal_nets snat to ip saddr map @vmi_eip/);

    runner.calls.length = 0;
    const moved: Binding[] = [PAIR[0] as Binding, { eip: "192.168.18.101", vmi: "10.0.0.12" }];
    m.setDesired({ bindings: moved, internalNets: NETS });
    // eip_vmi and vmi_eip: one delete and one add each; vmis: one of each.
    assert.equal(await m.apply({ reread: false }), 6);
    assert.equal(runner.calls.length, 1);
    const input = runner.calls[0]?.input ?? "";
    assert.doesNotMatch(input, /table ip kube_eip \{/);
    assert.match(await table(), /192\.168\.18\.101 : 10\.0\.0\.12/);
    assert.doesNotMatch(await table(), /10\.0\.0\.11/);
    assert.equal(await m.apply({ reread: true }), 0, "the read back matches what was written");
    assert.equal(await foreign(), before);
  });

  it("repairs drift: a lost element, a flushed chain, a deleted table", async () => {
    const m = new NftablesManager(runner);
    m.setDesired({ bindings: PAIR, internalNets: NETS });
    await m.apply({ reread: false });
    await ns.run("nft", ["delete", "element", "ip", "kube_eip", "eip_vmi", "{ 192.168.18.100 }"]);
    assert.equal(await m.apply({ reread: true }), 1);
    assert.match(await table(), /192\.168\.18\.100 : 10\.0\.0\.1/);
    await ns.run("nft", ["flush", "chain", "ip", "kube_eip", "forward"]);
    assert.equal(await m.apply({ reread: true }), 1);
    assert.match(await table(), /ct status dnat ct original ip daddr @eips/);
    await ns.run("nft", ["add", "chain", "ip", "kube_eip", "extra"]);
    await m.apply({ reread: true });
    assert.doesNotMatch(await table(), /chain extra/);
    await ns.run("nft", ["delete", "table", "ip", "kube_eip"]);
    assert.equal(await m.apply({ reread: true }), 1);
    assert.match(await table(), /192\.168\.18\.101 : 10\.0\.0\.11/);
  });

  it("a fresh manager adopts the table as it is and writes nothing", async () => {
    const first = new NftablesManager(runner);
    first.setDesired({ bindings: PAIR, internalNets: NETS });
    await first.apply({ reread: false });
    const second = new NftablesManager(runner);
    second.setDesired({ bindings: PAIR, internalNets: NETS });
    second.adopt(await second.read());
    runner.calls.length = 0;
    assert.equal(await second.apply({ reread: false }), 0);
    assert.equal(runner.calls.length, 0);
  });

  it("removes the table when the last binding goes, and leaves other tables", async () => {
    const before = await foreign();
    const m = new NftablesManager(runner);
    m.setDesired({ bindings: PAIR, internalNets: NETS });
    await m.apply({ reread: false });
    m.setDesired({ bindings: [], internalNets: NETS });
    assert.equal(await m.apply({ reread: false }), 1);
    const tables = (await ns.run("nft", ["list", "tables"])).stdout;
    assert.doesNotMatch(tables, /kube_eip/);
    assert.equal(await foreign(), before);
    assert.equal(await m.apply({ reread: true }), 0);
  });

  it("bad input: a clear error and nothing written", async () => {
    const m = new NftablesManager(runner);
    m.setDesired({ bindings: PAIR, internalNets: NETS });
    await m.apply({ reread: false });
    const text = await table();
    m.setDesired({
      bindings: [...PAIR, { eip: "192.168.18.102 } ; flush ruleset ; {", vmi: "10.0.0.3" }],
      internalNets: NETS,
    });
    await assert.rejects(m.apply({ reread: false }), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.match(err.message, /invalid address/);
      return true;
    });
    assert.equal(await table(), text);
  });
});
