// Real agents in lab nodes, for the tests, the demo and the benchmarks: start an eip_agent
// in a node the way a DaemonSet would (its own process, real flags), talk to it, and read
// back the node's kernel state with the real tools.
import { fileURLToPath } from "node:url";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AgentClient } from "../common/agent-api.js";
import { NFT_TABLE, SET_INTERNAL } from "../model/desired.js";
import type { Lab, LabProcess } from "./lab.js";
import { agentTlsArgs, eipctlTlsArgs, labPki } from "./lab-tls.js";
import { type SeedNode, seedBind, seedMetadata, seedSetup } from "./seed-agent.js";

export const AGENT_BIN = fileURLToPath(new URL("../bin/eip_agent.js", import.meta.url));
export const EIPCTL_BIN = fileURLToPath(new URL("../bin/eipctl.js", import.meta.url));

/** The seed's service network; the lab's service address is in it. */
export const SERVICE_NET = "192.168.223.0/24";

export interface NodeAgent {
  readonly node: number;
  readonly proc: LabProcess;
  readonly stateDir: string;
  readonly socket: string;
  readonly client: AgentClient;
  /** SIGKILL: no chance to clean anything up. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface AgentStartOptions {
  readonly extraArgs?: readonly string[];
  readonly resyncSeconds?: number;
  readonly seedStateDir?: string;
  /** Run under this name (log file); default agent-node<N>. */
  readonly name?: string;
  /** Environment variables added to the agent's (PATH, to put a wrapper before a tool). */
  readonly env?: Readonly<Record<string, string>>;
  /** Serve gRPC without TLS (--insecure), for a test about plaintext; default mutual TLS. */
  readonly plaintext?: boolean;
  /** --dataplane; default labDataplane(). */
  readonly dataplane?: Dataplane;
  /** The eip_agent.js to run (another build, for an upgrade); default AGENT_BIN. */
  readonly binary?: string;
}

export type Dataplane = "iptables" | "nftables";

/**
 * The dataplane the lab's agents use unless a test names one: $KUBE_EIP_E2E_DATAPLANE
 * (iptables or nftables), so the whole e2e suite runs on either (docs/tests.md).
 */
export function labDataplane(): Dataplane {
  const value = process.env["KUBE_EIP_E2E_DATAPLANE"] ?? "iptables";
  if (value !== "iptables" && value !== "nftables") {
    throw new Error(
      `KUBE_EIP_E2E_DATAPLANE must be iptables or nftables, not ${JSON.stringify(value)}`,
    );
  }
  return value;
}

export function agentArgs(lab: Lab, node: number, opts: AgentStartOptions = {}): string[] {
  const info = lab.node(node);
  const stateDir = lab.stateDir(`agent-node${node}`);
  const t = lab.topology;
  return [
    "--gateway-ip",
    lab.describe().router.publicAddress,
    "--gateway-dev",
    info.gatewayDevice,
    "--eip-cidr",
    t.publicNet,
    "--internal-net",
    t.podNet,
    "--internal-net",
    SERVICE_NET,
    "--listen-address",
    info.mgmtAddress,
    "--metrics-address",
    `${info.mgmtAddress}:9127`,
    "--state-dir",
    stateDir,
    "--unix-socket",
    join(stateDir, "agent.sock"),
    "--seed-state-dir",
    opts.seedStateDir ?? join(stateDir, "no-seed"),
    "--resync-interval",
    String(opts.resyncSeconds ?? 1),
    "--log-level",
    "debug",
    ...(opts.plaintext ? ["--insecure"] : agentTlsArgs(lab, node)),
    "--dataplane",
    opts.dataplane ?? labDataplane(),
    ...(opts.extraArgs ?? []),
  ];
}

export async function startAgent(
  lab: Lab,
  node: number,
  opts: AgentStartOptions = {},
): Promise<NodeAgent> {
  await labPki(lab);
  const args = agentArgs(lab, node, opts);
  const stateDir = lab.stateDir(`agent-node${node}`);
  const socket = join(stateDir, "agent.sock");
  const proc = await lab.spawnIn(
    lab.nodeNamespace(node),
    [process.execPath, opts.binary ?? AGENT_BIN, ...args],
    {
      name: opts.name ?? `agent-node${node}`,
      env: opts.env,
      waitFor: /"msg":"serving gRPC"/,
      timeoutMs: 20_000,
    },
  );
  const client = new AgentClient(`unix:${socket}`);
  return {
    node,
    proc,
    stateDir,
    socket,
    client,
    async kill() {
      client.close();
      proc.child.kill("SIGKILL");
      await proc.exited;
    },
    async stop() {
      client.close();
      await proc.stop();
    },
  };
}

/**
 * eipctl run inside the node's namespace against the agent's TCP address, as the
 * administrator on mutual TLS (or plaintext, --insecure, for an agent started plaintext).
 */
export async function eipctl(
  lab: Lab,
  node: number,
  args: readonly string[],
  opts: { plaintext?: boolean } = {},
) {
  try {
    const r = await lab.nodeExec(node, [
      process.execPath,
      EIPCTL_BIN,
      "--target",
      `${lab.node(node).mgmtAddress}:6127`,
      ...(opts.plaintext ? ["--insecure"] : eipctlTlsArgs(lab, node)),
      ...args,
    ]);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { exitCode?: number; stderr?: string };
    return { code: e.exitCode ?? -1, stdout: "", stderr: e.stderr ?? String(err) };
  }
}

/**
 * What node `node`'s agent holds, as `eipctl --action list --output json` lists it. Throws
 * unless eipctl exited 0 with a well-formed list, so "holds nothing" is never read from an
 * agent that did not answer.
 */
export async function listedBindings(
  lab: Lab,
  node: number,
): Promise<{ eipAddr: string; vmiAddr: string }[]> {
  const r = await eipctl(lab, node, ["--action", "list", "--output", "json"]);
  if (r.code !== 0) throw new Error(`eipctl list on node${node} exited ${r.code}: ${r.stderr}`);
  const listed = JSON.parse(r.stdout) as { bindings?: unknown; inSync?: unknown };
  if (!Array.isArray(listed.bindings) || typeof listed.inSync !== "boolean") {
    throw new Error(`eipctl list on node${node}: not a list: ${r.stdout}`);
  }
  return listed.bindings as { eipAddr: string; vmiAddr: string }[];
}

/**
 * Everything of ours a person would look at on the node, normalised (no counters, no
 * random ipset initvals), so two snapshots can be compared for equality.
 */
export async function kernelSnapshot(lab: Lab, node: number): Promise<Record<string, string>> {
  const mode = lab.node(node).iptablesMode;
  const run = async (argv: string[]) => (await lab.nodeExec(node, argv)).stdout;
  const strip = (text: string) =>
    text
      .split("\n")
      .filter((l) => l && !l.startsWith("#"))
      // Counters are traffic, not state (kube-eip-traffic's members count packets).
      .map((l) =>
        l
          .replace(/\[\d+:\d+\]/g, "")
          .replace(/ initval 0x[0-9a-f]+/, "")
          .replace(/ packets \d+ bytes \d+/, ""),
      )
      .join("\n");
  return {
    iptables: strip(await run([`iptables-${mode}-save`])),
    ipset: strip(await run(["ipset", "save"])),
    rules: await run(["ip", "rule", "show"]),
    routes: await run(["ip", "route", "show", "table", "all"]),
    addresses: await run(["ip", "-4", "-o", "addr", "show"]),
    // Our nftables table ("" when there is none), without counters, one line per element.
    nftables: nftElementLines(
      await run(["nft", "--stateless", "list", "table", "ip", NFT_TABLE]).catch(() => ""),
    ),
  };
}

/**
 * The internal nets (--internal-net) as node `node`'s dataplane holds them, sorted: the
 * members of the ipset k8s_internal_net, or of our nftables table's set internal_nets.
 */
export async function heldInternalNets(
  lab: Lab,
  node: number,
  dataplane: Dataplane = labDataplane(),
): Promise<string[]> {
  if (dataplane === "iptables") {
    const { stdout } = await lab.nodeExec(node, ["ipset", "list", SET_INTERNAL]);
    const members = stdout.split("Members:\n")[1] ?? "";
    return members.split("\n").filter(Boolean).sort();
  }
  const { stdout } = await lab.nodeExec(node, [
    "nft",
    "-j",
    "list",
    "set",
    "ip",
    NFT_TABLE,
    "internal_nets",
  ]);
  const parsed = JSON.parse(stdout) as { nftables: { set?: { elem?: unknown[] } }[] };
  const elems = parsed.nftables.flatMap((o) => o.set?.elem ?? []);
  return elems
    .map((e) => {
      const p = (e as { prefix?: { addr: string; len: number } }).prefix;
      return p ? `${p.addr}/${p.len}` : String(e);
    })
    .sort();
}

/**
 * `nft list` text with each set's or map's `elements = { a, b, ... }` (which nft wraps
 * over lines and prints in hash order) as one sorted `element a` line per element, so a
 * binding's elements are lines of their own, as its iptables rules are.
 */
export function nftElementLines(text: string): string {
  return text.replace(/^(\s*)elements = \{([^}]*)\}\n/gm, (_all, indent: string, body: string) =>
    body
      .split(",")
      .map((e) => e.trim())
      .filter(Boolean)
      .sort()
      .map((e) => `${indent}element ${e}\n`)
      .join(""),
  );
}

/**
 * Node `node` (on iptables-nft) as the seed's agent left it holding one binding: its kernel
 * state, made command by command as the seed made it, and its metadata file in the seed's
 * state directory, whose path is returned (for the agent's --seed-state-dir).
 */
export async function seedNodeHolding(
  lab: Lab,
  node: number,
  eip: string,
  vmi: string,
): Promise<string> {
  const info = lab.node(node);
  const seed: SeedNode = {
    iptables: "iptables-nft",
    gatewayIp: lab.topology.routerPublic,
    gatewayDev: info.gatewayDevice,
    eipCidr: lab.topology.publicNet,
    cniDev: info.bridge,
    cniAddress: info.bridgeAddress,
    internalNets: [lab.topology.podNet, SERVICE_NET],
  };
  const exec = (argv: readonly string[]) => lab.nodeExec(node, argv);
  await seedSetup(exec, seed);
  // The seed accepted only the VMI's own packets in FORWARD; its inbound traffic passed
  // where the site's FORWARD chain let it. Give the lab node such a site rule.
  await exec([
    "iptables-nft",
    "-A",
    "FORWARD",
    "-m",
    "set",
    "--match-set",
    "kube-eip-vmi",
    "dst",
    "-j",
    "ACCEPT",
  ]);
  await seedBind(exec, seed, eip, vmi);
  const seedDir = lab.stateDir(`seed-node${node}`);
  const meta = seedMetadata(eip, vmi);
  await writeFile(join(seedDir, meta.name), meta.body);
  return seedDir;
}
