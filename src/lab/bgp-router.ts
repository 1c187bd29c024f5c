// The lab's EIP router speaks BGP with a different implementation than the nodes: BIRD 2,
// in the router namespace, peering with every node's agent over the management network
// and putting what it learns into the router's kernel table, as a site's edge router
// would. It accepts only /32s inside the public (EIP) network and announces nothing.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Lab } from "./lab.js";
import { stopPids } from "./netns.js";

export const ROUTER_AS = 65000;
export const NODE_AS = 65001;

export interface BgpRouterOptions {
  /** Graceful restart helper (BIRD's default "aware"); "off" makes it drop routes at once. */
  readonly gracefulRestart?: "aware" | "off";
  /** The network whose /32s are accepted; default the lab's public network. */
  readonly acceptNet?: string;
}

export interface BgpRouter {
  readonly asn: number;
  readonly nodeAsn: number;
  /** BIRD's PID (a daemon: it outlives a `kube-eip-lab up`; the lab's down() stops it). */
  readonly pid: number;
  /** `--bgp-*` flags for node i's agent. */
  agentArgs(node: number): string[];
  /** The router's kernel routes that BIRD installed: destination -> next hop. */
  kernelRoutes(): Promise<Map<string, string>>;
  /** Each node's BGP session state, as BIRD shows it (e.g. "Established", "Active"). */
  sessions(): Promise<Map<number, string>>;
  birdc(args: readonly string[]): Promise<string>;
  stop(): Promise<void>;
}

function birdConfig(lab: Lab, opts: BgpRouterOptions, logFile: string): string {
  const router = lab.describe().router;
  const nodes = Array.from({ length: lab.nodeCount }, (_, k) => lab.node(k + 1));
  const gr = opts.gracefulRestart === "off" ? "graceful restart off;" : "graceful restart aware;";
  return [
    `log "${logFile}" all;`,
    `router id ${router.mgmtAddress};`,
    "protocol device { scan time 10; }",
    // Learned routes go to the kernel; nothing is read from it.
    "protocol kernel { ipv4 { export all; import none; }; }",
    "template bgp node {",
    `  local ${router.mgmtAddress} as ${ROUTER_AS};`,
    "  hold time 9;",
    // A lab router retries at once: the sessions come up as soon as a node's speaker runs.
    "  connect delay time 1;",
    "  connect retry time 2;",
    "  error wait time 1, 4;",
    `  ${gr}`,
    "  ipv4 {",
    `    import filter { if net ~ [ ${opts.acceptNet ?? lab.topology.publicNet}{32,32} ] then accept; reject; };`,
    "    export none;",
    "  };",
    "}",
    ...nodes.map(
      (n) => `protocol bgp node${n.index} from node { neighbor ${n.mgmtAddress} as ${NODE_AS}; }`,
    ),
    "",
  ].join("\n");
}

/** Starts BIRD in the lab's router namespace; the lab's down() stops it with the rest. */
export async function startBgpRouter(lab: Lab, opts: BgpRouterOptions = {}): Promise<BgpRouter> {
  const dir = lab.stateDir("bird");
  const conf = join(dir, "bird.conf");
  const socket = join(dir, "bird.ctl");
  const pidFile = join(dir, "bird.pid");
  await writeFile(conf, birdConfig(lab, opts, join(lab.logDir, "bird.log")));
  const ns = lab.describe().router.namespace;
  // BIRD daemonises once its config is loaded and its control socket is open.
  await lab.exec(ns, ["bird", "-c", conf, "-s", socket, "-P", pidFile]);
  const pid = Number((await readFile(pidFile, "utf8")).trim());
  const birdc = async (args: readonly string[]) =>
    (await lab.exec(ns, ["birdc", "-s", socket, ...args])).stdout;
  return {
    asn: ROUTER_AS,
    nodeAsn: NODE_AS,
    pid,
    agentArgs: (node) => {
      const mgmt = lab.node(node).mgmtAddress;
      return [
        "--bgp-type",
        "gobgp",
        "--node-ip",
        mgmt,
        "--bgp-local-as",
        String(NODE_AS),
        "--bgp-peer",
        `${lab.describe().router.mgmtAddress}:${ROUTER_AS}`,
        "--bgp-hold-time",
        "9",
      ];
    },
    async kernelRoutes() {
      const out = await lab.exec(ns, ["ip", "-4", "route", "show", "proto", "bird"]);
      const routes = new Map<string, string>();
      for (const line of out.stdout.split("\n")) {
        const m = /^(\S+) via (\S+)/.exec(line);
        if (m?.[1] && m[2]) routes.set(m[1].includes("/") ? m[1] : `${m[1]}/32`, m[2]);
      }
      return routes;
    },
    async sessions() {
      const out = await birdc(["show", "protocols"]);
      const states = new Map<number, string>();
      for (const line of out.split("\n")) {
        const m = /^node(\d+)\s+BGP\s+\S+\s+\S+\s+\S+\s+(\S+)/.exec(line);
        if (m?.[1] && m[2]) states.set(Number(m[1]), m[2]);
      }
      return states;
    },
    birdc,
    stop: () => stopPids([pid]),
  };
}
