import { test } from "node:test";
import assert from "node:assert/strict";
import { formatIpv4Net } from "../common/ipv4.js";
import { ConfigError, parseAgentArgs } from "./config.js";

const required = [
  "--gateway-ip",
  "192.168.18.1",
  "--gateway-dev",
  "eth1",
  "--eip-cidr",
  "192.168.18.0/24",
];

test("the seed's flags and defaults", () => {
  const c = parseAgentArgs([
    ...required,
    "--internal-net",
    "10.244.0.0/16",
    "--internal-net",
    "192.168.223.0/24",
  ]);
  assert.equal(c.port, 6127);
  assert.equal(c.logLevel, "info");
  assert.equal(c.bgpType, "none");
  assert.equal(c.arpPoisoning, false);
  assert.deepEqual(c.internalNets.map(formatIpv4Net), ["10.244.0.0/16", "192.168.223.0/24"]);
  assert.equal(c.stateDir, "/var/lib/kube-eip");
  assert.equal(c.cniDev, "cni0");
  assert.equal(c.iptablesMode, "auto");
  assert.equal(c.resyncIntervalSec, 10);
  assert.equal(c.tls, undefined);
});

test("Go-style single-dash flags of the seed's scripts still work", () => {
  const c = parseAgentArgs([
    "-gateway-ip",
    "192.168.18.1",
    "-gateway-dev=eth1",
    "-eip-cidr",
    "192.168.18.0/24",
    "-port",
    "7000",
    "-arp-poisoning",
  ]);
  assert.equal(c.port, 7000);
  assert.equal(c.gatewayDev, "eth1");
  assert.equal(c.arpPoisoning, true);
});

test("bad flags are refused with a clear message", () => {
  const cases: [string[], RegExp][] = [
    [[], /missing required flag\(s\): --gateway-ip, --gateway-dev, --eip-cidr/],
    [[...required, "--eip-cidr", "192.168.18.0/33"], /not an IPv4 network/],
    [[...required, "--gateway-ip", "10.0.0.1"], /outside --eip-cidr/],
    [[...required, "--port", "70000"], /1 to 65535/],
    [[...required, "--iptables-mode", "both"], /Allowed choices are auto, legacy, nft/],
    [[...required, "--tls-cert", "c.pem"], /go together/],
    [[...required, "--internal-net", "10.244.0.1/16"], /not an IPv4 network/],
    [[...required, "--cni-dev", "cni 0"], /--cni-dev "cni 0" is not a network device name/],
    [[...required, "--arp-poisoning", "--cni-dev", "eth1"], /needs a --cni-dev other than/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(
      () => parseAgentArgs(argv),
      (e: Error) => e instanceof ConfigError && message.test(e.message),
      argv.join(" "),
    );
  }
});
