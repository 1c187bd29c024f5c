import { test } from "node:test";
import assert from "node:assert/strict";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { type RequestPolicy, SHOWN_MAX, parseRequest } from "./request.js";

const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);
const policy: RequestPolicy = {
  eipCidr: net("192.168.18.0/24"),
  internalNets: [net("10.244.0.0/16"), net("192.168.223.0/24")],
  gatewayIp: "192.168.18.1",
};
const VMI = "10.244.1.10";
const EIP = "192.168.18.100";

test("accepts a good bind and canonicalises nothing it need not", () => {
  assert.deepEqual(parseRequest({ action: "bind", eipAddr: EIP, vmiAddr: VMI }, policy), {
    ok: true,
    op: { action: "bind", binding: { eip: EIP, vmi: VMI } },
  });
});

test("refuses bad input with a reason naming the problem", () => {
  const cases: [string, string, string, RegExp][] = [
    ["bind", "192.168.18.300", VMI, /EIP .* not an IPv4/],
    ["bind", "fe80::1", VMI, /not an IPv4/],
    ["bind", EIP, "10.244.1", /VMI address .* not an IPv4/],
    ["bind", "192.168.19.100", VMI, /outside the EIP network 192.168.18.0\/24/],
    ["bind", EIP, "172.16.0.5", /none of the internal networks/],
    ["bind", EIP, "192.168.18.7", /inside the EIP network/],
    ["attach", EIP, VMI, /unknown action "attach"/],
    ["", EIP, VMI, /unknown action/],
  ];
  for (const [action, eipAddr, vmiAddr, reason] of cases) {
    const r = parseRequest({ action, eipAddr, vmiAddr }, policy);
    assert.equal(r.ok, false, `${action} ${eipAddr} ${vmiAddr}`);
    if (!r.ok) assert.match(r.reason, reason);
  }
});

test("an EIP that would take over the gateway, a segment or a special address is refused", () => {
  const cases: [RequestPolicy, string, string][] = [
    [policy, "192.168.18.1", "EIP 192.168.18.1 is the public gateway (--gateway-ip)"],
    [
      policy,
      "192.168.18.0",
      "EIP 192.168.18.0 is the network address of the EIP network 192.168.18.0/24",
    ],
    [
      policy,
      "192.168.18.255",
      "EIP 192.168.18.255 is the broadcast address of the EIP network 192.168.18.0/24",
    ],
    [
      { ...policy, eipCidr: net("203.0.113.8/30"), gatewayIp: "203.0.113.9" },
      "203.0.113.11",
      "EIP 203.0.113.11 is the broadcast address of the EIP network 203.0.113.8/30",
    ],
    [policy, "0.0.0.0", "EIP 0.0.0.0 is the unspecified address"],
    [policy, "127.0.0.1", "EIP 127.0.0.1 is a loopback address"],
    [policy, "127.255.0.9", "EIP 127.255.0.9 is a loopback address"],
    [policy, "169.254.169.254", "EIP 169.254.169.254 is a link-local address"],
    [policy, "224.0.0.1", "EIP 224.0.0.1 is a multicast address"],
    [policy, "239.255.255.250", "EIP 239.255.255.250 is a multicast address"],
    [policy, "255.255.255.255", "EIP 255.255.255.255 is the limited broadcast address"],
    // An EIP network that reaches into a special range still refuses it there.
    [
      { ...policy, eipCidr: net("127.0.0.0/8"), gatewayIp: "127.0.0.1" },
      "127.0.0.5",
      "EIP 127.0.0.5 is a loopback address",
    ],
    // Only a policy that bypassed the start-up check can hold this; still refused.
    [
      { ...policy, internalNets: [net("192.168.18.128/25")] },
      "192.168.18.200",
      "EIP 192.168.18.200 is inside the internal network 192.168.18.128/25",
    ],
  ];
  for (const [p, eipAddr, reason] of cases) {
    const r = parseRequest({ action: "bind", eipAddr, vmiAddr: VMI }, p);
    assert.deepEqual(r, { ok: false, reason }, eipAddr);
  }
});

test("a VMI address that is its network's edge or a special address is refused", () => {
  const cases: [string, string][] = [
    [
      "10.244.0.0",
      "VMI address 10.244.0.0 is the network address of the internal network 10.244.0.0/16",
    ],
    [
      "10.244.255.255",
      "VMI address 10.244.255.255 is the broadcast address of the internal network 10.244.0.0/16",
    ],
    [
      "192.168.223.255",
      "VMI address 192.168.223.255 is the broadcast address of the internal network 192.168.223.0/24",
    ],
    ["127.0.0.1", "VMI address 127.0.0.1 is a loopback address"],
    ["0.0.0.0", "VMI address 0.0.0.0 is the unspecified address"],
    ["224.1.1.1", "VMI address 224.1.1.1 is a multicast address"],
    ["169.254.0.5", "VMI address 169.254.0.5 is a link-local address"],
  ];
  for (const [vmiAddr, reason] of cases) {
    const r = parseRequest({ action: "bind", eipAddr: EIP, vmiAddr }, policy);
    assert.deepEqual(r, { ok: false, reason }, vmiAddr);
  }
});

test("/31 and /32 networks have no network or broadcast address: every address is usable", () => {
  // (The gateway of the /32 is elsewhere only to test the edge rule alone.)
  const eip31 = { ...policy, eipCidr: net("203.0.113.8/31"), gatewayIp: "203.0.113.9" };
  const eip32 = { ...policy, eipCidr: net("203.0.113.8/32"), gatewayIp: "203.0.113.1" };
  const vmi31 = { ...policy, internalNets: [net("10.9.0.4/31")] };
  const vmi32 = { ...policy, internalNets: [net("10.9.0.4/32")] };
  const cases: [RequestPolicy, string, string][] = [
    [eip31, "203.0.113.8", VMI],
    [eip32, "203.0.113.8", VMI],
    [vmi31, EIP, "10.9.0.4"],
    [vmi31, EIP, "10.9.0.5"],
    [vmi32, EIP, "10.9.0.4"],
  ];
  for (const [p, eipAddr, vmiAddr] of cases) {
    const r = parseRequest({ action: "bind", eipAddr, vmiAddr }, p);
    assert.equal(r.ok, true, `${eipAddr} ${vmiAddr}: ${r.ok ? "" : r.reason}`);
  }
});

test("unbind needs only two addresses, so old bindings can always be removed", () => {
  for (const [eipAddr, vmiAddr] of [
    ["203.0.113.5", "172.16.0.5"],
    ["192.168.18.1", VMI],
    ["192.168.18.0", "10.244.0.0"],
    ["127.0.0.1", "127.0.0.2"],
  ] as const) {
    const r = parseRequest({ action: "unbind", eipAddr, vmiAddr }, policy);
    assert.equal(r.ok, true, `${eipAddr} ${vmiAddr}`);
  }
  const bad = parseRequest({ action: "unbind", eipAddr: "x", vmiAddr: VMI }, policy);
  assert.equal(bad.ok, false);
});

test("a reason echoes a caller's input only cut short", () => {
  const huge = "1".repeat(1024 * 1024);
  for (const raw of [
    { action: "bind", eipAddr: huge, vmiAddr: VMI },
    { action: "bind", eipAddr: EIP, vmiAddr: huge },
    { action: huge, eipAddr: EIP, vmiAddr: VMI },
  ]) {
    const r = parseRequest(raw, policy);
    assert.equal(r.ok, false);
    if (r.ok) continue;
    assert.ok(r.reason.length < SHOWN_MAX + 120, `${r.reason.length} characters`);
    assert.match(r.reason, /\.\.\. \(1048576 characters\)/);
  }
  const short = parseRequest({ action: "bind", eipAddr: "a\nb", vmiAddr: VMI }, policy);
  assert.equal(short.ok ? "" : short.reason, 'EIP "a\\nb" is not an IPv4 address');
});
