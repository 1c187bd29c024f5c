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

test("parseIpv4 agrees with the strict grammar on generated strings (the hand parser against a regular expression)", () => {
  const octet = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
  const reference = (t: string) => {
    const parts = t.split(".");
    if (parts.length !== 4 || !parts.every((p) => octet.test(p))) return undefined;
    return parts.reduce((v, p) => v * 256 + Number(p), 0);
  };
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const alphabet = "0123456789..  12500x";
  for (let k = 0; k < 50_000; k++) {
    const len = 1 + Math.floor(rand() * 16);
    let t = "";
    for (let i = 0; i < len; i++) t += alphabet[Math.floor(rand() * alphabet.length)];
    assert.equal(parseIpv4(t), reference(t), JSON.stringify(t));
  }
  for (const t of ["1.2.3.4", "255.255.255.255", "0.0.0.0", "1.2.3.04", "1.2.3.256", "1.2.3.4\n"])
    assert.equal(parseIpv4(t), reference(t), JSON.stringify(t));
});
