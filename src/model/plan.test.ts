import { test } from "node:test";
import assert from "node:assert/strict";
import { COUNT_JUMPS, HAIRPIN_JUMP, plan, type PlanConfig } from "./plan.js";

const config: PlanConfig = {
  internalNets: ["192.168.223.0/24", "10.244.0.0/16"],
  gatewayIp: "192.168.18.1",
  gatewayDev: "eth1",
  eipCidr: "192.168.18.0/24",
  arpPoisoning: false,
  cniDev: "cni0",
};

test("plans the seed's kernel state for one binding", () => {
  const d = plan(config, [{ eip: "192.168.18.100", vmi: "10.244.1.10" }]);
  assert.deepEqual(d.ipsets, [
    { name: "k8s_internal_net", type: "hash:net", members: ["10.244.0.0/16", "192.168.223.0/24"] },
    { name: "kube-eip-eip", type: "hash:ip", members: ["192.168.18.100"] },
    { name: "kube-eip-vmi", type: "hash:ip", members: ["10.244.1.10"] },
    // Counting off: the set stays, empty.
    { name: "kube-eip-traffic", type: "hash:ip", counters: true, members: [] },
  ]);
  assert.deepEqual(d.chains, [
    {
      table: "nat",
      name: "KUBE-EIP-PREROUTING",
      rules: ["-d 192.168.18.100/32 -j DNAT --to-destination 10.244.1.10"],
    },
    {
      table: "nat",
      name: "KUBE-EIP-POSTROUTING",
      rules: [
        "-s 10.244.1.10/32 -m set ! --match-set k8s_internal_net dst -j SNAT --to-source 192.168.18.100",
      ],
    },
    {
      table: "filter",
      name: "KUBE-EIP-FORWARD",
      rules: [
        "-m conntrack --ctdir REPLY -j ACCEPT",
        "-d 10.244.1.10/32 -m conntrack --ctstate DNAT --ctorigdst 192.168.18.100 -j ACCEPT",
      ],
    },
    {
      table: "nat",
      name: "KUBE-EIP-HAIRPIN",
      rules: ["-m conntrack --ctorigdst 192.168.18.0/24 -j MASQUERADE"],
    },
    { table: "mangle", name: "KUBE-EIP-TX", rules: [] },
  ]);
  assert.ok(d.jumps.includes(HAIRPIN_JUMP));
  assert.ok(COUNT_JUMPS.every((j) => !d.jumps.includes(j) && d.retiredJumps.includes(j)));
  assert.deepEqual(d.routes, [
    { kind: "link", dst: "192.168.18.0/24", dev: "eth1" },
    { kind: "via", dst: "default", gateway: "192.168.18.1", dev: "eth1" },
    { kind: "throw", dst: "10.244.0.0/16" },
    { kind: "throw", dst: "192.168.223.0/24" },
  ]);
  assert.deepEqual(d.ruleSources, ["10.244.1.10"]);
  assert.deepEqual(d.gatewayAddresses, ["192.168.18.100"]);
  assert.equal(d.arpProxy, undefined);
  assert.deepEqual(d.sysctls, [{ key: "net/ipv4/conf/eth1/arp_ignore", value: "1" }]);
});

test("with ARP poisoning the EIPs are answered by proxy ARP, not put on the gateway device", () => {
  const d = plan({ ...config, arpPoisoning: true }, [
    { eip: "192.168.18.101", vmi: "10.244.1.11" },
    { eip: "192.168.18.100", vmi: "10.244.1.10" },
  ]);
  assert.deepEqual(d.gatewayAddresses, []);
  assert.deepEqual(d.arpProxy, { eips: ["192.168.18.100", "192.168.18.101"], routeDev: "cni0" });
  assert.deepEqual(plan({ ...config, arpPoisoning: true }, []).arpProxy, {
    eips: [],
    routeDev: "cni0",
  });
  assert.deepEqual(d.sysctls, [
    { key: "net/ipv4/conf/eth1/arp_ignore", value: "1" },
    { key: "net/ipv4/neigh/eth1/proxy_delay", value: "0" },
  ]);
});

test("no bindings: empty chains and sets, the table's routes stay", () => {
  const d = plan(config, []);
  assert.deepEqual(
    d.ipsets.map((s) => s.members.length),
    [2, 0, 0, 0],
  );
  assert.deepEqual(d.ruleSources, []);
  assert.equal(d.routes.length, 4);
});

test("with traffic counters: the EIPs and the VMIs are counted, the counting rules are kept", () => {
  const d = plan({ ...config, trafficCounters: true }, [
    { eip: "192.168.18.101", vmi: "10.244.1.11" },
    { eip: "192.168.18.100", vmi: "10.244.1.10" },
  ]);
  assert.deepEqual(d.ipsets.at(-1), {
    name: "kube-eip-traffic",
    type: "hash:ip",
    counters: true,
    members: ["192.168.18.100", "192.168.18.101", "10.244.1.10", "10.244.1.11"],
  });
  assert.deepEqual(d.chains.at(-1), {
    table: "mangle",
    name: "KUBE-EIP-TX",
    rules: [
      "-m set ! --match-set k8s_internal_net dst -m set --match-set kube-eip-traffic src -j RETURN",
      "-m conntrack --ctstate DNAT --ctorigdst 192.168.18.0/24 --ctdir REPLY -m set --match-set kube-eip-traffic src",
    ],
  });
  assert.ok(COUNT_JUMPS.every((j) => d.jumps.includes(j) && !d.retiredJumps.includes(j)));
  assert.equal(d.trafficCounters, true);
});
