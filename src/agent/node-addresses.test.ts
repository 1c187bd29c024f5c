import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeRunner } from "../kernel/fake-runner.js";
import { NodeAddresses } from "./node-addresses.js";

const ADDR_CMD = "ip -json -4 addr show";
const PROXY_CMD = "ip -4 -json neigh show proxy";

function link(ifname: string, addrs: { local: string; prefixlen: number; label?: string }[]) {
  return {
    ifname,
    addr_info: addrs.map((a) => ({ family: "inet", label: ifname, ...a })),
  };
}

const ADDRS = JSON.stringify([
  link("lo", [{ local: "127.0.0.1", prefixlen: 8 }]),
  link("eth0", [{ local: "172.16.0.11", prefixlen: 16 }]),
  link("eth1", [
    { local: "192.168.18.11", prefixlen: 24 },
    { local: "192.168.18.100", prefixlen: 32, label: "eth1:eip" },
    // keepalived's VIP, and a VIP with our label on another device: both someone else's.
    { local: "192.168.18.150", prefixlen: 32 },
  ]),
  link("cni0", [{ local: "10.244.1.1", prefixlen: 24 }]),
  link("vip0", [{ local: "192.168.18.160", prefixlen: 32, label: "eth1:eip" }]),
]);
const PROXIES = JSON.stringify([
  { dst: "192.168.18.101", dev: "eth1", proxy: null, protocol: "225" },
  { dst: "192.168.18.151", dev: "eth1", proxy: null },
  { dst: "192.168.18.152", dev: "eth2", proxy: null, protocol: "225" },
]);

function node(): { runner: FakeRunner; addresses: NodeAddresses; clock: { t: number } } {
  const runner = new FakeRunner().on(ADDR_CMD, ADDRS).on(PROXY_CMD, PROXIES);
  const clock = { t: 0 };
  const addresses = new NodeAddresses(runner, {
    gatewayDev: "eth1",
    protocol: 225,
    maxAgeMs: 1000,
    now: () => clock.t,
  });
  return { runner, addresses, clock };
}

describe("NodeAddresses", () => {
  it("refuses an EIP someone else holds on any device, as an address or a proxy entry", async () => {
    const { addresses } = node();
    const vmi = "10.244.1.10";
    for (const [eip, pattern] of [
      [
        "192.168.18.150",
        /EIP 192\.168\.18\.150 is held by this node on eth1 and was not added by kube-eip/,
      ],
      ["192.168.18.11", /held by this node on eth1/],
      ["172.16.0.11", /held by this node on eth0/],
      ["192.168.18.160", /held by this node on vip0/],
      ["192.168.18.151", /proxy ARP entry on eth1 that kube-eip did not add/],
      ["192.168.18.152", /proxy ARP entry on eth2/],
    ] as const) {
      assert.match((await addresses.refusal({ eip, vmi }, false)) ?? "accepted", pattern, eip);
    }
  });

  it("accepts a free EIP, our own marked state, and an EIP the table already holds", async () => {
    const { addresses } = node();
    const vmi = "10.244.1.10";
    assert.equal(await addresses.refusal({ eip: "192.168.18.120", vmi }, false), undefined);
    assert.equal(await addresses.refusal({ eip: "192.168.18.100", vmi }, false), undefined);
    assert.equal(await addresses.refusal({ eip: "192.168.18.101", vmi }, false), undefined);
    // Bound here already (e.g. the seed's /24, adopted): ours by record.
    assert.equal(await addresses.refusal({ eip: "192.168.18.150", vmi }, true), undefined);
  });

  it("refuses a VMI address the node holds, on the CNI bridge or any device", async () => {
    const { addresses } = node();
    for (const [vmi, dev] of [
      ["10.244.1.1", "cni0"],
      ["127.0.0.1", "lo"],
      ["172.16.0.11", "eth0"],
    ] as const) {
      const reason = await addresses.refusal({ eip: "192.168.18.120", vmi }, true);
      assert.equal(reason, `VMI address ${vmi} is an address of this node (${dev})`);
    }
  });

  it("reads once for a burst of binds, and again once the read is older than maxAgeMs", async () => {
    const { runner, addresses, clock } = node();
    const binds = Array.from({ length: 50 }, (_, i) => ({
      eip: `192.168.18.${i + 1}`,
      vmi: "10.244.1.10",
    }));
    await Promise.all(binds.map((b) => addresses.refusal(b, false)));
    assert.equal(runner.calls.length, 2, "one addr and one neigh dump");
    clock.t = 999;
    await addresses.refusal({ eip: "192.168.18.120", vmi: "10.244.1.10" }, false);
    assert.equal(runner.calls.length, 2);
    clock.t = 1000;
    runner.on(
      ADDR_CMD,
      JSON.stringify([link("eth1", [{ local: "192.168.18.120", prefixlen: 32 }])]),
    );
    assert.match(
      (await addresses.refusal({ eip: "192.168.18.120", vmi: "10.244.1.10" }, false)) ?? "",
      /held by this node on eth1/,
      "a VIP added since is seen after at most maxAgeMs",
    );
    assert.equal(runner.calls.length, 4);
  });
});
