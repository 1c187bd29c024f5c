// The counter readers with a fake runner; the kernel's own output is checked in the lab
// (e2e/traffic.privileged.test.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeRunner, failure } from "./fake-runner.js";
import { IpsetTrafficReader, NftTrafficReader, parseIpsetCounters } from "./traffic.js";

const BINDINGS = [
  { eip: "192.168.18.10", vmi: "10.244.1.10" },
  { eip: "192.168.18.11", vmi: "10.244.1.11" },
];

test("parseIpsetCounters reads each member's packets and bytes, and nothing else", () => {
  const text = [
    "create kube-eip-traffic hash:ip family inet hashsize 4096 maxelem 1048576 counters bucketsize 12 initval 0x5c151ad8",
    "add kube-eip-traffic 192.168.18.10 packets 12 bytes 1008",
    "add kube-eip-traffic 10.244.1.10 packets 3 bytes 252",
    "add kube-eip-traffic 10.244.1.11",
    "add kube-eip-traffic 10.244.1.12 packets x bytes 1",
    "add kube-eip-other 192.168.18.11 packets 1 bytes 1",
    "",
  ].join("\n");
  const counts = parseIpsetCounters(text, "kube-eip-traffic");
  assert.deepEqual(
    [...counts],
    [
      ["192.168.18.10", { packets: 12, bytes: 1008 }],
      ["10.244.1.10", { packets: 3, bytes: 252 }],
    ],
  );
});

test("iptables: in from the EIP's member, out from the VMI's; a missing set reads as none", async () => {
  const runner = new FakeRunner().on(
    "ipset save kube-eip-traffic",
    [
      "add kube-eip-traffic 192.168.18.10 packets 5 bytes 500",
      "add kube-eip-traffic 10.244.1.10 packets 4 bytes 400",
    ].join("\n"),
  );
  const counts = await new IpsetTrafficReader(runner).read(BINDINGS);
  assert.deepEqual(
    [...counts],
    [["192.168.18.10", { rxBytes: 500, txBytes: 400, rxPackets: 5, txPackets: 4 }]],
  );
  const missing = new FakeRunner().on(
    "ipset save kube-eip-traffic",
    failure(
      "ipset save kube-eip-traffic",
      "ipset v7.17: The set with the given name does not exist",
    ),
  );
  assert.equal((await new IpsetTrafficReader(missing).read(BINDINGS)).size, 0);
  const broken = new FakeRunner().on(
    "ipset save kube-eip-traffic",
    failure("ipset save kube-eip-traffic", "ipset v7.17: Kernel error"),
  );
  await assert.rejects(new IpsetTrafficReader(broken).read(BINDINGS), /traffic counters/);
});

test("nftables: in from eip_rx, out from eip_tx, both by EIP; no table reads as none", async () => {
  const set = (name: string, packets: number, bytes: number) =>
    JSON.stringify({
      nftables: [
        {
          set: {
            name,
            elem: [{ elem: { val: "192.168.18.11", counter: { packets, bytes } } }],
          },
        },
      ],
    });
  const runner = new FakeRunner()
    .on("nft -j list set ip kube_eip eip_rx", set("eip_rx", 2, 200))
    .on("nft -j list set ip kube_eip eip_tx", set("eip_tx", 1, 100));
  const counts = await new NftTrafficReader(runner).read(BINDINGS);
  assert.deepEqual(
    [...counts],
    [["192.168.18.11", { rxBytes: 200, txBytes: 100, rxPackets: 2, txPackets: 1 }]],
  );
  const none = new FakeRunner().on(
    (c) => c.command === "nft",
    failure("nft", "Error: No such file or directory\nlist set ip kube_eip eip_rx\n"),
  );
  assert.equal((await new NftTrafficReader(none).read(BINDINGS)).size, 0);
});
