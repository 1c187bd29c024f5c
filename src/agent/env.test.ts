import { test } from "node:test";
import assert from "node:assert/strict";
import { formatIpv4Net } from "../common/ipv4.js";
import { agentCommand, parseAgentArgs } from "./config.js";
import { agentArgsFromEnv, ENV_SETTINGS } from "./env.js";

/** The seed's ConfigMap (config/agent of the Go kube-eip), as the DaemonSet passes it. */
const SEED_ENV = {
  AGENT_SVC_NET: "192.168.223.0/24",
  AGENT_POD_NET: "10.244.0.0/16",
  AGENT_EIP_NET: "192.168.18.0/24",
  AGENT_EIP_GW_IP: "192.168.18.1",
  AGENT_EIP_GW_DEV: "enp2s0",
  AGENT_LOG_LEVEL: "debug",
};

test("the seed's six variables become the seed's flags", () => {
  const { argv, used } = agentArgsFromEnv(SEED_ENV);
  assert.deepEqual(argv, [
    "--internal-net=192.168.223.0/24",
    "--internal-net=10.244.0.0/16",
    "--eip-cidr=192.168.18.0/24",
    "--gateway-ip=192.168.18.1",
    "--gateway-dev=enp2s0",
    "--log-level=debug",
  ]);
  assert.deepEqual(
    used.map((u) => u.env),
    Object.keys(SEED_ENV),
  );
  const c = parseAgentArgs([...argv, "--insecure"]); // secure by default: plaintext is asked for;
  assert.deepEqual(c.internalNets.map(formatIpv4Net), ["192.168.223.0/24", "10.244.0.0/16"]);
  assert.equal(formatIpv4Net(c.eipCidr), "192.168.18.0/24");
  assert.equal(c.gatewayIp, "192.168.18.1");
  assert.equal(c.gatewayDev, "enp2s0");
  assert.equal(c.logLevel, "debug");
  assert.equal(c.bgpType, "none");
  assert.equal(c.tls, undefined);
});

test("empty, blank and unset variables are not set; variables not ours are ignored", () => {
  const env = {
    ...SEED_ENV,
    AGENT_LOG_LEVEL: "",
    AGENT_BGP_TYPE: "   ",
    AGENT_TLS_CERT: "",
    AGENT_TLS_KEY: "",
    AGENT_TLS_CLIENT_CA: "",
    AGENT_ARP_POISONING: "",
    AGENT_SOMETHING_ELSE: "x",
    PATH: "/usr/bin",
  };
  const { argv } = agentArgsFromEnv(env);
  assert.ok(!argv.some((a) => a.startsWith("--log-level") || a.startsWith("--tls")));
  const c = parseAgentArgs([...argv, "--insecure"]);
  assert.equal(c.logLevel, "info", "the default");
  assert.equal(c.bgpType, "none");
  assert.equal(c.arpPoisoning, false);
  assert.equal(c.tls, undefined);
  assert.deepEqual(agentArgsFromEnv({}), { argv: [], used: [] });
});

test("lists take commas or blanks; values are trimmed; values may start with a dash", () => {
  const { argv } = agentArgsFromEnv({
    AGENT_SVC_NET: " 192.168.223.0/24, 10.96.0.0/12 ",
    AGENT_POD_NET: "10.244.0.0/16\n10.245.0.0/16",
    AGENT_BGP_PEERS: "172.16.0.1:65000,172.16.0.2:65000",
    AGENT_BGP_PASSWORD: "-secret",
  });
  assert.deepEqual(argv, [
    "--internal-net=192.168.223.0/24",
    "--internal-net=10.96.0.0/12",
    "--internal-net=10.244.0.0/16",
    "--internal-net=10.245.0.0/16",
    "--bgp-peer=172.16.0.1:65000",
    "--bgp-peer=172.16.0.2:65000",
    "--bgp-password=-secret",
  ]);
});

test("a whole ConfigMap with BGP, ARP and TLS, and the node address from the downward API", () => {
  const env = {
    ...SEED_ENV,
    AGENT_NODE_IP: "172.16.0.11",
    AGENT_BGP_TYPE: "gobgp",
    AGENT_BGP_LOCAL_AS: "65001",
    AGENT_BGP_PEERS: "172.16.0.1:65000 172.16.0.2:65002",
    AGENT_BGP_PASSWORD: "s3cret",
    AGENT_BGP_LISTEN_PORT: "0",
    AGENT_ARP_POISONING: "True",
    AGENT_CNI_DEV: "br0",
    AGENT_IPTABLES_MODE: "auto",
    AGENT_UNIX_SOCKET: "/var/lib/kube-eip/agent.sock",
    AGENT_PROC_SYS: "/host/proc/sys",
    AGENT_TLS_CERT: "/etc/kube-eip/tls/tls.crt",
    AGENT_TLS_KEY: "/etc/kube-eip/tls/tls.key",
    AGENT_TLS_CLIENT_CA: "/etc/kube-eip/tls/ca.crt",
    AGENT_TLS_ALLOWED_CLIENTS: "kube-eip-operator,kube-eip-admin",
  };
  const { argv, used } = agentArgsFromEnv(env);
  const c = parseAgentArgs(argv);
  assert.equal(c.bgpType, "gobgp");
  assert.equal(c.bgp?.localAs, 65001);
  assert.equal(c.bgp?.routerId, "172.16.0.11");
  assert.equal(c.bgp?.nextHop, "172.16.0.11");
  assert.deepEqual(
    c.bgp?.peers.map((p) => [p.address, p.asn, p.password]),
    [
      ["172.16.0.1", 65000, "s3cret"],
      ["172.16.0.2", 65002, "s3cret"],
    ],
  );
  assert.equal(c.arpPoisoning, true);
  assert.equal(c.cniDev, "br0");
  assert.equal(c.unixSocket, "/var/lib/kube-eip/agent.sock");
  assert.equal(c.procSysDir, "/host/proc/sys");
  assert.deepEqual(c.tls, {
    cert: "/etc/kube-eip/tls/tls.crt",
    key: "/etc/kube-eip/tls/tls.key",
    clientCa: "/etc/kube-eip/tls/ca.crt",
    allow: { clients: ["kube-eip-operator", "kube-eip-admin"], readers: [] },
  });
  const password = used.find((u) => u.env === "AGENT_BGP_PASSWORD");
  assert.equal(password?.shown, "<hidden>", "the password is never shown");
  assert.ok(!JSON.stringify(used).includes("s3cret"));
});

test("a switch is true or false; false leaves the flag out", () => {
  assert.deepEqual(agentArgsFromEnv({ AGENT_ARP_POISONING: "false" }).argv, []);
  assert.deepEqual(agentArgsFromEnv({ AGENT_ARP_POISONING: "TRUE" }).argv, ["--arp-poisoning"]);
  assert.throws(() => agentArgsFromEnv({ AGENT_ARP_POISONING: "yes" }), {
    name: "EnvError",
    message: /AGENT_ARP_POISONING="yes": must be true or false/,
  });
});

test("bad values reach the agent's own checks, which name the flag", () => {
  const { argv } = agentArgsFromEnv({ ...SEED_ENV, AGENT_EIP_NET: "192.168.18.0/33" });
  assert.throws(() => parseAgentArgs(argv), /--eip-cidr.*not an IPv4 network/);
});

test("every flag of eip_agent has exactly one variable, and every variable names a flag", () => {
  const flags = agentCommand()
    .options.map((o) => o.long)
    .filter((f): f is string => f !== undefined && f !== "--help" && f !== "--version");
  const mapped = new Set(ENV_SETTINGS.map((s) => s.flag));
  assert.deepEqual(
    flags.filter((f) => !mapped.has(f)),
    [],
    "flags without a variable",
  );
  assert.deepEqual(
    [...mapped].filter((f) => !flags.includes(f)),
    [],
    "variables of no flag",
  );
  const names = ENV_SETTINGS.map((s) => s.env);
  assert.equal(new Set(names).size, names.length, "no variable twice");
  // Only --internal-net has two (the seed's svc_net and pod_net).
  const byFlag = ENV_SETTINGS.filter((s) => s.flag === "--internal-net").map((s) => s.env);
  assert.deepEqual(byFlag, ["AGENT_SVC_NET", "AGENT_POD_NET"]);
});
