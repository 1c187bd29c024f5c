import { test } from "node:test";
import assert from "node:assert/strict";
import { canonicalIpv4, formatIpv4Net, netContains, parseIpv4, parseIpv4Net } from "./ipv4.js";

test("parses dotted quads strictly", () => {
  assert.equal(canonicalIpv4("10.0.0.1"), "10.0.0.1");
  assert.equal(canonicalIpv4("255.255.255.255"), "255.255.255.255");
  for (const bad of [
    "",
    "10.0.0",
    "10.0.0.1.2",
    "010.0.0.1",
    "256.0.0.1",
    " 10.0.0.1",
    "::1",
    "1e1.0.0.1",
    "a.b.c.d",
  ]) {
    assert.equal(parseIpv4(bad), undefined, bad);
  }
});

test("parses networks and checks membership exactly", () => {
  const net = parseIpv4Net("10.0.0.0/24");
  assert.ok(net);
  assert.equal(formatIpv4Net(net), "10.0.0.0/24");
  assert.ok(netContains(net, parseIpv4("10.0.0.255") ?? -1));
  assert.ok(!netContains(net, parseIpv4("10.0.1.0") ?? -1));
  assert.equal(parseIpv4Net("10.0.0.1/24"), undefined, "host bits refused");
  assert.equal(
    formatIpv4Net(parseIpv4Net("10.0.0.1/24", { allowHostBits: true }) ?? { base: 0, prefix: 0 }),
    "10.0.0.0/24",
  );
  assert.equal(formatIpv4Net(parseIpv4Net("0.0.0.0/0") ?? { base: 1, prefix: 1 }), "0.0.0.0/0");
  assert.equal(parseIpv4Net("10.0.0.0/33"), undefined);
  assert.equal(formatIpv4Net(parseIpv4Net("10.0.0.1") ?? { base: 0, prefix: 0 }), "10.0.0.1/32");
});
