// Simulated nodes for the scale benchmark: many real agents in one process, each the whole
// agent (`startAgent`: binding table, state file, apply loop, the gRPC server with mutual
// TLS as in production) on its own loopback address, whose kernel is SimKernel (a strict
// recording model of ipset, iptables and iproute2: src/kernel/sim-kernel.ts) instead of
// the tools.
//
//   node dist/bench/sim-agents/main.js SPEC.json
//
// SPEC (sim-agents/spec.ts): the nodes (name, address), the port, the PKI folder made by
// kube-eip-certs' code, the addresses the agents accept, and a state folder. Prints
// `READY <n>` once every agent serves, and stops them all on SIGTERM.
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { type RunningAgent, startAgent } from "../../src/agent/agent.js";
import { parseAgentArgs } from "../../src/agent/config.js";
import { ADMIN_CN, OPERATOR_CN, nodePki } from "../../src/deploy/certs.js";
import { SimKernel } from "../../src/kernel/sim-kernel.js";
import type { SimAgentsSpec } from "./spec.js";

const spec = JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as SimAgentsSpec;
const logger = pino({ level: "warn" });
const running: RunningAgent[] = [];

/** The devices a node has before the agent starts. */
function simKernel(): SimKernel {
  const sim = new SimKernel();
  for (const dev of ["lo", "eth0", spec.gatewayDev, spec.cniDev]) sim.ip.links.add(dev);
  return sim;
}

async function start(node: { name: string; ip: string }): Promise<RunningAgent> {
  const dir = join(spec.stateDir, node.name);
  await mkdir(dir, { recursive: true });
  const pki = nodePki(spec.pkiDir, node.name);
  const config = parseAgentArgs([
    "--gateway-ip",
    spec.gatewayIp,
    "--gateway-dev",
    spec.gatewayDev,
    "--eip-cidr",
    spec.eipCidr,
    "--internal-net",
    spec.internalNet,
    "--cni-dev",
    spec.cniDev,
    "--state-dir",
    join(dir, "state"),
    "--seed-state-dir",
    join(dir, "seed"),
    "--rt-tables",
    join(dir, "rt_tables"),
    "--iptables-mode",
    "nft",
    "--garp-count",
    "0",
    "--listen-address",
    node.ip,
    "--port",
    String(spec.port),
    "--metrics-address",
    "",
    "--resync-interval",
    "3600",
    "--tls-cert",
    pki.cert,
    "--tls-key",
    pki.key,
    "--tls-client-ca",
    pki.clientCa,
    "--tls-allowed-client",
    OPERATOR_CN,
    "--tls-allowed-client",
    ADMIN_CN,
  ]);
  return startAgent(config, { runner: simKernel(), logger: logger.child({ node: node.name }) });
}

let next = 0;
const starter = async () => {
  while (next < spec.nodes.length) running.push(await start(spec.nodes[next++] as never));
};
await Promise.all(Array.from({ length: 16 }, starter));
process.stdout.write(`READY ${running.length}\n`);
process.on("SIGTERM", () => {
  void Promise.allSettled(running.map((a) => a.stop())).then(() => process.exit(0));
});
