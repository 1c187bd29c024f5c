// The agent container's start-up, in a lab node: the image's entrypoint
// (eip_agent-container) with the ConfigMap's values as AGENT_* variables and the DaemonSet's
// arguments, under the DaemonSet's privileges (root with only NET_ADMIN and NET_RAW, no
// privilege escalation) and kernel settings written as files (--proc-sys). Checked by what
// the agent does: TLS on 6127 verified by the node's name, the local
// socket, the internal nets (on the dataplane KUBE_EIP_E2E_DATAPLANE names), the gateway, the BGP peers, the gateway device's arp_ignore,
// and traffic through a bound EIP. Bad values stop it with the variable named.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeCerts, type CertFiles } from "../src/deploy/certs.js";
import { CommandError, ExecRunner } from "../src/kernel/runner.js";
import { EIPCTL_BIN, SERVICE_NET, heldInternalNets, labDataplane } from "../src/lab/agents.js";
import { Lab, type LabProcess } from "../src/lab/lab.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const ENTRYPOINT = fileURLToPath(new URL("../src/bin/eip_agent-container.js", import.meta.url));
const EIP = "192.168.18.100";
const PORT = 8080;
/** The DaemonSet's capabilities; everything else dropped, as in config/agent/eip-agent.yaml. */
const CAPS = ["net_admin", "net_raw"];
const CAP_BITS = (1n << 12n) | (1n << 13n);

describe("the agent container's start-up in a lab node", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  let agent: LabProcess;
  let certs: CertFiles;
  let vmi: string;
  let stateDir: string;

  /** The DaemonSet's environment: eip-agent-cm's keys, the downward API's node address. */
  const containerEnv = (): Record<string, string> => ({
    AGENT_SVC_NET: SERVICE_NET,
    AGENT_POD_NET: lab.topology.podNet,
    AGENT_EIP_NET: lab.topology.publicNet,
    AGENT_EIP_GW_IP: lab.topology.routerPublic,
    AGENT_EIP_GW_DEV: lab.node(1).gatewayDevice,
    AGENT_LOG_LEVEL: "debug",
    AGENT_CNI_DEV: "",
    AGENT_IPTABLES_MODE: "",
    AGENT_DATAPLANE: labDataplane(),
    AGENT_ARP_POISONING: "false",
    AGENT_GARP_COUNT: "",
    AGENT_BGP_TYPE: "gobgp",
    AGENT_BGP_LOCAL_AS: "65001",
    AGENT_BGP_PEERS: `${lab.topology.routerMgmt}:65000`,
    AGENT_BGP_ROUTER_ID: "",
    AGENT_BGP_LISTEN_PORT: "",
    AGENT_GOBGP_ENDPOINT: "",
    AGENT_TLS_CERT: node1().cert,
    AGENT_TLS_KEY: node1().key,
    AGENT_TLS_CLIENT_CA: node1().clientCa,
    AGENT_TLS_ALLOWED_CLIENTS: "kube-eip-admin,kube-eip-operator",
    AGENT_RESYNC_INTERVAL: "",
    AGENT_NODE_IP: lab.node(1).mgmtAddress,
    // Where the lab keeps this node's files (the DaemonSet's hostPath mounts).
    AGENT_STATE_DIR: stateDir,
    AGENT_SEED_STATE_DIR: join(stateDir, "no-seed"),
    AGENT_LISTEN_ADDRESS: lab.node(1).mgmtAddress,
    AGENT_METRICS_ADDRESS: `${lab.node(1).mgmtAddress}:9127`,
  });

  /** argv of the entrypoint as the container runs it, with the DaemonSet's privileges. */
  const containerArgv = (args: readonly string[]) => [
    "setpriv",
    "--no-new-privs",
    `--bounding-set=-all,${CAPS.map((c) => `+${c}`).join(",")}`,
    "--inh-caps=-all",
    "--",
    process.execPath,
    ENTRYPOINT,
    ...args,
  ];

  const eipctl = async (args: readonly string[]) => {
    try {
      const r = await lab.nodeExec(1, [process.execPath, EIPCTL_BIN, ...args]);
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      return { code: err.exitCode, stdout: "", stderr: err.stderr };
    }
  };
  const node1 = () => certs.nodes.get("node1") ?? assert.fail("node1's certificate");
  const tls = () => [
    "--target",
    `${lab.node(1).mgmtAddress}:6127`,
    "--tls-ca",
    certs.agentCa.cert,
    "--tls-cert",
    certs.admin.cert,
    "--tls-key",
    certs.admin.key,
  ];

  before(async () => {
    lab = await Lab.up({ nodes: 1, iptablesModes: "nft", removeOnExit: true });
    stateDir = lab.stateDir("agent-container");
    certs = await makeCerts(new ExecRunner(), {
      dir: lab.stateDir("certs"),
      nodes: [{ name: "node1" }],
    });
    vmi = (await lab.addVmi("a", 1)).address;
    await lab.startTcpServer(lab.vmiNamespace("a"), PORT);
    agent = await lab.spawnIn(
      lab.nodeNamespace(1),
      containerArgv([`--unix-socket=${join(stateDir, "agent.sock")}`, "--proc-sys=/proc/sys"]),
      {
        name: "agent-container",
        env: containerEnv(),
        waitFor: /"msg":"serving gRPC"/,
        timeoutMs: 20_000,
      },
    );
  });

  after(async () => {
    await agent?.stop();
    await lab?.down();
  });

  test("it runs with the DaemonSet's capabilities only and logs where its settings came from", async () => {
    const status = await readFile(`/proc/${agent.pid}/status`, "utf8");
    const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? assert.fail(status);
    assert.equal(BigInt(`0x${eff}`), CAP_BITS);
    assert.match(status, /^NoNewPrivs:\s*1$/m);
    const log = agent.output();
    assert.match(log, /"msg":"settings from the environment"/);
    assert.match(log, /"AGENT_EIP_GW_DEV":"eth1"/);
    assert.match(log, /"AGENT_ARP_POISONING":"false"/);
    assert.doesNotMatch(log, /"AGENT_CNI_DEV"/, "an empty value is not set");
  });

  test("port 6127 speaks TLS, verified by the node's name; the local socket does not", async () => {
    const plain = await eipctl(["--target", `${lab.node(1).mgmtAddress}:6127`, "--action", "list"]);
    assert.notEqual(plain.code, 0, "plaintext is refused");
    const byAddress = await eipctl([...tls(), "--action", "list"]);
    assert.notEqual(byAddress.code, 0, "the certificate does not name the node's address");
    const byName = await eipctl([...tls(), "--tls-server-name", "node1", "--action", "list"]);
    assert.equal(byName.code, 0, byName.stderr);
    const local = await eipctl([
      "--target",
      `unix:${join(stateDir, "agent.sock")}`,
      "--action",
      "list",
    ]);
    assert.equal(local.code, 0, local.stderr);
  });

  test("a bind through TLS carries traffic; the kernel shows the ConfigMap's nets, gateway and device", async () => {
    const bind = await eipctl([
      ...tls(),
      "--tls-server-name",
      "node1",
      "--action",
      "bind",
      "--eip-ip",
      EIP,
      "--vmi-ip",
      vmi,
    ]);
    assert.equal(bind.code, 0, bind.stderr);
    const outside = lab.describe().outside.namespace;
    assert.equal((await lab.tcpRequest(outside, EIP, PORT)).trim(), lab.topology.outside);
    // AGENT_LOG_LEVEL=debug: the bind's debug lines are there.
    assert.ok(await eventually(async () => /"level":"debug"/.test(agent.output()), 5_000));

    assert.deepEqual(await heldInternalNets(lab, 1), [lab.topology.podNet, SERVICE_NET].sort());
    const table = (await lab.nodeExec(1, ["ip", "route", "show", "table", "eip_route"])).stdout;
    assert.match(table, new RegExp(`^default via ${lab.topology.routerPublic} dev eth1`, "m"));
    // Written as a file under --proc-sys, with NET_ADMIN only.
    const arpIgnore = await lab.nodeExec(1, ["sysctl", "-n", "net.ipv4.conf.eth1.arp_ignore"]);
    assert.equal(arpIgnore.stdout.trim(), "1");
  });

  test("AGENT_BGP_PEERS and AGENT_NODE_IP reach the BGP speaker", async () => {
    const peers = await eipctl([
      "--target",
      `unix:${join(stateDir, "agent.sock")}`,
      "--action",
      "peers",
      "--output",
      "json",
    ]);
    assert.equal(peers.code, 0, peers.stderr);
    assert.match(
      peers.stdout,
      new RegExp(`"address": "${lab.topology.routerMgmt.replace(/\./g, "\\.")}"`),
    );
    assert.match(agent.output(), /"msg":"BGP speaker: gobgpd started"/);
  });

  test("a bad value stops the container at once, naming the variable", async () => {
    const run = async (env: Record<string, string>) => {
      const vars = Object.entries({ ...containerEnv(), ...env }).map(([k, v]) => `${k}=${v}`);
      try {
        await lab.nodeExec(1, ["env", ...vars, ...containerArgv([])]);
        return assert.fail("the entrypoint started");
      } catch (err) {
        if (!(err instanceof CommandError)) throw err;
        return err;
      }
    };
    const sw = await run({ AGENT_ARP_POISONING: "yes" });
    assert.equal(sw.exitCode, 2);
    assert.match(sw.stderr, /AGENT_ARP_POISONING="yes": must be true or false/);
    const net = await run({ AGENT_EIP_NET: "192.168.18.0/33" });
    assert.equal(net.exitCode, 2);
    assert.match(net.stderr, /--eip-cidr/);
    assert.match(net.stderr, /AGENT_EIP_NET=192\.168\.18\.0\/33 -> --eip-cidr/);
  });
});
