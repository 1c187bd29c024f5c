// Secure by default: the flag combinations the agent refuses (exit 2 with this reason, see
// main.ts) and the ones it takes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseAgentArgs } from "./config.js";

const base = [
  "--gateway-ip",
  "192.168.18.1",
  "--gateway-dev",
  "eth1",
  "--eip-cidr",
  "192.168.18.0/24",
  "--internal-net",
  "10.244.0.0/16",
];
const tls = ["--tls-cert", "a.crt", "--tls-key", "a.key"];

test("flag combinations that would serve callers nobody named are refused", () => {
  const cases: [string[], RegExp][] = [
    [[], /refusing to serve gRPC without TLS on 0\.0\.0\.0: .* or --insecure/],
    [["--listen-address", "10.0.0.5"], /without TLS on 10\.0\.0\.5/],
    [tls, /--tls-cert without --tls-client-ca would serve any client/],
    [
      [...tls, "--tls-client-ca", "ca.crt"],
      /without --tls-allowed-client would let any certificate/,
    ],
    [
      [...tls, "--tls-client-ca", "ca.crt", "--tls-allowed-reader", "r"],
      /without --tls-allowed-client/,
    ],
    [["--insecure", "--tls-allowed-client", "x"], /need TLS/],
    [
      [...tls, "--tls-client-ca", "ca.crt", "--tls-allowed-client", "x", "--insecure"],
      /--insecure contradicts --tls-cert/,
    ],
    [["--tls-client-ca", "ca.crt"], /needs --tls-cert/],
  ];
  for (const [extra, message] of cases) {
    assert.throws(
      () => parseAgentArgs([...base, ...extra]),
      (e: Error) => e instanceof ConfigError && message.test(e.message),
      extra.join(" "),
    );
  }
});

test("mutual TLS with named clients and readers; plaintext on loopback or with --insecure", () => {
  const c = parseAgentArgs([
    ...base,
    ...tls,
    "--tls-client-ca",
    "ca.crt",
    "--tls-allowed-client",
    "kube-eip-operator",
    "--tls-allowed-client",
    "kube-eip-admin",
    "--tls-allowed-reader",
    "monitor",
  ]);
  assert.deepEqual(c.tls?.allow, {
    clients: ["kube-eip-operator", "kube-eip-admin"],
    readers: ["monitor"],
  });
  assert.equal(c.insecure, false);
  const local = parseAgentArgs([...base, "--listen-address", "127.0.0.1"]);
  assert.equal(local.tls, undefined);
  assert.equal(local.insecure, false, "loopback is not reported insecure");
  assert.equal(parseAgentArgs([...base, "--insecure"]).insecure, true);
});
