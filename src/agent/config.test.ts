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
  "--internal-net",
  "10.244.0.0/16",
  "--insecure",
];

test("the seed's flags and defaults", () => {
  const c = parseAgentArgs([...required, "--internal-net", "192.168.223.0/24"]);
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
  assert.equal(c.insecure, true);
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
    "-internal-net",
    "10.244.0.0/16",
    "-insecure",
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

test("--bgp-type gobgp: the node address is next hop and router id; peers as ADDRESS:AS", () => {
  const c = parseAgentArgs([
    ...required,
    "--bgp-type",
    "gobgp",
    "--node-ip",
    "172.16.0.11",
    "--bgp-local-as",
    "65001",
    "--bgp-peer",
    "172.16.0.1:65000",
    "--bgp-peer",
    "172.16.0.2:4200000000",
  ]);
  assert.equal(c.bgp?.localAs, 65001);
  assert.equal(c.bgp?.routerId, "172.16.0.11");
  assert.equal(c.bgp?.nextHop, "172.16.0.11");
  assert.deepEqual(
    c.bgp?.peers.map((p) => [p.address, p.asn, p.port, p.holdTimeSec, p.gracefulRestartSec]),
    [
      ["172.16.0.1", 65000, 179, 90, 120],
      ["172.16.0.2", 4200000000, 179, 90, 120],
    ],
  );
  assert.equal(c.bgp?.listenPort, -1, "connects out only by default");
  assert.equal(c.bgp?.endpoint, undefined, "runs its own gobgpd");
  const apart = parseAgentArgs([
    ...required,
    "--bgp-type=gobgp",
    "--bgp-local-as=65001",
    "--bgp-router-id=10.0.0.1",
    "--bgp-nexthop=10.0.0.2",
    "--gobgp-endpoint=127.0.0.1:50052",
  ]);
  assert.equal(apart.bgp?.routerId, "10.0.0.1");
  assert.equal(apart.bgp?.nextHop, "10.0.0.2");
  assert.equal(apart.bgp?.endpoint, "127.0.0.1:50052");
  assert.equal(c.bgp?.apiPort, undefined, "its gobgpd's API on a Unix socket unless asked");
  const sidecar = (endpoint: string) =>
    parseAgentArgs([
      ...required,
      "--bgp-type=gobgp",
      "--bgp-local-as=1",
      "--node-ip=10.0.0.1",
      `--gobgp-endpoint=${endpoint}`,
    ]).bgp?.endpoint;
  assert.equal(sidecar("unix:///run/gobgp/api.sock"), "unix:/run/gobgp/api.sock");
  assert.equal(sidecar("unix:/run/gobgp/api.sock"), "unix:/run/gobgp/api.sock");
  assert.equal(parseAgentArgs(required).bgp, undefined);
});

test("bad BGP settings are refused with a clear message", () => {
  const gobgp = [...required, "--bgp-type", "gobgp", "--node-ip", "172.16.0.11"];
  const cases: [string[], RegExp][] = [
    [gobgp, /needs --bgp-local-as/],
    [[...required, "--bgp-type", "gobgp", "--bgp-local-as", "65001"], /needs --node-ip/],
    [[...gobgp, "--bgp-local-as", "0"], /from 1 to 4294967295/],
    [[...gobgp, "--bgp-local-as", "1", "--bgp-peer", "172.16.0.1:0"], /AS number/],
    [[...gobgp, "--bgp-local-as", "1", "--bgp-peer", "300.0.0.1:65000"], /not ADDRESS:AS/],
    [[...gobgp, "--bgp-local-as", "1", "--bgp-peer", "172.16.0.1"], /not ADDRESS:AS/],
    [
      [...gobgp, "--bgp-local-as", "1", "--bgp-peer", "172.16.0.1:1", "--bgp-peer", "172.16.0.1:2"],
      /given twice/,
    ],
    [
      [...gobgp, "--bgp-local-as", "1", "--gobgp-endpoint", "localhost"],
      /neither unix:\/ABSOLUTE\/PATH nor HOST:PORT/,
    ],
    [
      [...gobgp, "--bgp-local-as", "1", "--gobgp-endpoint", "unix:run/api.sock"],
      /neither unix:\/ABSOLUTE\/PATH nor HOST:PORT/,
    ],
    [
      [
        ...gobgp,
        "--bgp-local-as",
        "1",
        "--gobgp-endpoint",
        "unix:/a.sock",
        "--gobgp-api-port",
        "50051",
      ],
      /--gobgp-api-port is for the gobgpd the agent runs/,
    ],
    [
      [...gobgp, "--bgp-local-as", "1", "--state-dir", `/${"d".repeat(100)}`],
      /--state-dir is too long for gobgpd's API socket/,
    ],
    [[...required, "--bgp-peer", "172.16.0.1:65000"], /--bgp-peer given, but --bgp-type is none/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(
      () => parseAgentArgs(argv),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, message);
        return true;
      },
    );
  }
});

test("an agent without --internal-net, or whose --eip-cidr overlaps one, does not start", () => {
  const base = [...required.slice(0, 6), "--insecure"];
  const cases: [string[], string][] = [
    [
      base,
      "no --internal-net: give the pod and service networks (the ConfigMap's pod_net and svc_net)",
    ],
    [
      [...base, "--internal-net", "192.168.0.0/16"],
      "--eip-cidr 192.168.18.0/24 overlaps --internal-net 192.168.0.0/16",
    ],
    [
      [...base, "--internal-net", "10.244.0.0/16", "--internal-net", "192.168.18.128/25"],
      "--eip-cidr 192.168.18.0/24 overlaps --internal-net 192.168.18.128/25",
    ],
    [
      [...base, "--internal-net", "192.168.18.0/24"],
      "--eip-cidr 192.168.18.0/24 overlaps --internal-net 192.168.18.0/24",
    ],
  ];
  for (const [argv, message] of cases) {
    assert.throws(
      () => parseAgentArgs(argv),
      (e: Error) => e instanceof ConfigError && e.message === message,
      argv.join(" "),
    );
  }
  // Next to each other is not overlapping.
  const c = parseAgentArgs([...base, "--internal-net", "192.168.19.0/24"]);
  assert.deepEqual(c.internalNets.map(formatIpv4Net), ["192.168.19.0/24"]);
});
