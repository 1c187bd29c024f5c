import { test } from "node:test";
import assert from "node:assert/strict";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { parseRequest } from "./request.js";

const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);
const policy = {
  eipCidr: net("192.168.18.0/24"),
  internalNets: [net("10.244.0.0/16"), net("192.168.223.0/24")],
};

test("accepts a good bind and canonicalises nothing it need not", () => {
  assert.deepEqual(
    parseRequest({ action: "bind", eipAddr: "192.168.18.100", vmiAddr: "10.244.1.10" }, policy),
    {
      ok: true,
      op: { action: "bind", binding: { eip: "192.168.18.100", vmi: "10.244.1.10" } },
    },
  );
});

test("refuses bad input with a reason naming the problem", () => {
  const cases: [string, string, string, RegExp][] = [
    ["bind", "192.168.18.300", "10.244.1.10", /EIP .* not an IPv4/],
    ["bind", "fe80::1", "10.244.1.10", /not an IPv4/],
    ["bind", "192.168.18.100", "10.244.1", /VMI address .* not an IPv4/],
    ["bind", "192.168.19.100", "10.244.1.10", /outside the EIP network 192.168.18.0\/24/],
    ["bind", "192.168.18.100", "172.16.0.5", /none of the internal networks/],
    ["bind", "192.168.18.100", "192.168.18.7", /inside the EIP network/],
    ["attach", "192.168.18.100", "10.244.1.10", /unknown action "attach"/],
    ["", "192.168.18.100", "10.244.1.10", /unknown action/],
  ];
  for (const [action, eipAddr, vmiAddr, reason] of cases) {
    const r = parseRequest({ action, eipAddr, vmiAddr }, policy);
    assert.equal(r.ok, false, `${action} ${eipAddr} ${vmiAddr}`);
    if (!r.ok) assert.match(r.reason, reason);
  }
});

test("unbind needs only two addresses, so old bindings can always be removed", () => {
  const r = parseRequest(
    { action: "unbind", eipAddr: "203.0.113.5", vmiAddr: "172.16.0.5" },
    policy,
  );
  assert.equal(r.ok, true);
});

test("without internal nets any VMI address outside the EIP network is accepted", () => {
  const r = parseRequest(
    { action: "bind", eipAddr: "192.168.18.100", vmiAddr: "172.16.0.5" },
    { ...policy, internalNets: [] },
  );
  assert.equal(r.ok, true);
});
