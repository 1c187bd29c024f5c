// The packet side of the agent benchmark, with N bindings held: the rate of new TCP
// connections from the outside host to the first EIP and to the last (what the NAT lookup
// costs a new connection), and iperf3's forwarding throughput through an EIP against plain
// routed forwarding to the same VMI on the same lab path.
//
// The path: the outside host -> the router -> the public segment -> node 1's gateway device
// (which holds the EIPs, or answers ARP for them with --arp-poisoning) -> cni0 -> a lab VMI.
// The router gets the benchmark's gateway address (100.64.0.1/10 on its public device), so
// it reaches the EIPs on the segment and answers for the gateway the VMIs' replies go to.
// The held bindings' first and last EIPs lead to two real VMIs ("first", "last"), each
// running a TCP listener (`--conn-child serve`) and an iperf3 server.
//
// Plain forwarding is the same packets without the EIP: the router routes the first VMI's
// own address via the first EIP's owner on the segment (so the frames take the same link),
// and for the time of those rounds node 1 accepts them with one FORWARD rule of the bench's
// (iptables' FORWARD policy is DROP in the lab); no NAT, the same conntrack, the VMI's reply
// the same policy route back.
import type { Lab } from "../../src/lab/lab.js";
import { median, round } from "../common.js";
import type { ConnRound } from "./conn-child.js";
import type { Settings, Variant } from "./settings.js";
import { AGENT_NODE, GATEWAY_IP, type Pair, SELF } from "./shared.js";

const CONN_PORT = 7001;
const IPERF_PORT = 5201;
const PLAIN_COMMENT = "kube-eip-bench: plain forwarding to the first VMI";

/** The two lab VMIs behind the first and the last held EIP. */
export interface TrafficVmis {
  readonly first: { readonly address: string; readonly ns: string };
  readonly last: { readonly address: string; readonly ns: string };
}

export interface TrafficResult {
  readonly held: number;
  readonly first: Pair;
  readonly last: Pair;
  /** Position of the EIP's DNAT rule in KUBE-EIP-PREROUTING (iptables only). */
  readonly firstRule: number | undefined;
  readonly lastRule: number | undefined;
  readonly connLoops: number;
  readonly connRounds: { readonly first: ConnRound[]; readonly last: ConnRound[] };
  /** Medians of the rounds. */
  readonly firstPerSec: number;
  readonly lastPerSec: number;
  /** iperf3 received rate per round, Gbit/s. */
  readonly gbps: { readonly plain: number[]; readonly first: number[]; readonly last: number[] };
  readonly plainGbps: number;
  readonly firstGbps: number;
  readonly lastGbps: number;
}

const prepared = new WeakMap<Lab, TrafficVmis>();

/** Once per lab: the two VMIs with their servers, and the gateway address on the router. */
export async function trafficVmis(lab: Lab): Promise<TrafficVmis> {
  const done = prepared.get(lab);
  if (done) return done;
  const router = lab.describe().router;
  await lab.exec(router.namespace, [
    "ip",
    "addr",
    "add",
    `${GATEWAY_IP}/10`,
    "dev",
    router.publicDevice,
  ]);
  const vmis: { address: string; ns: string }[] = [];
  for (const name of ["first", "last"]) {
    const info = await lab.addVmi(name, AGENT_NODE);
    await lab.spawnIn(
      info.namespace,
      [process.execPath, SELF, "--conn-child", "serve", String(CONN_PORT)],
      { name: `conn-${name}`, waitFor: "listening" },
    );
    await lab.spawnIn(info.namespace, ["iperf3", "-s", "--forceflush", "-p", String(IPERF_PORT)], {
      name: `iperf3-${name}`,
      waitFor: "Server listening",
    });
    vmis.push({ address: info.address, ns: info.namespace });
  }
  const result = { first: vmis[0], last: vmis[1] } as TrafficVmis;
  prepared.set(lab, result);
  return result;
}

async function dnatPosition(lab: Lab, v: Variant, eip: string): Promise<number | undefined> {
  if (v.dataplane === "nftables") return undefined;
  const { stdout } = await lab.nodeExec(AGENT_NODE, [`iptables-${v.mode}-save`, "-t", "nat"]);
  const rules = stdout.split("\n").filter((l) => l.startsWith("-A KUBE-EIP-PREROUTING "));
  const at = rules.findIndex((l) => l.includes(` -d ${eip}/32 `));
  return at === -1 ? undefined : at + 1;
}

async function connRound(lab: Lab, eip: string, s: Settings): Promise<ConnRound> {
  const { stdout } = await lab.exec(lab.describe().outside.namespace, [
    process.execPath,
    SELF,
    "--conn-child",
    "connect",
    eip,
    String(CONN_PORT),
    String(s.connRoundMs),
    String(s.connLoops),
  ]);
  return JSON.parse(stdout) as ConnRound;
}

async function iperf(lab: Lab, host: string, s: Settings): Promise<number> {
  const { stdout } = await lab.exec(lab.describe().outside.namespace, [
    "iperf3",
    "-c",
    host,
    "-p",
    String(IPERF_PORT),
    "-t",
    String(s.iperfSeconds),
    "-O",
    "1",
    "-J",
  ]);
  const doc = JSON.parse(stdout) as { end?: { sum_received?: { bits_per_second?: number } } };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (typeof bps !== "number") throw new Error(`iperf3 to ${host}: no result`);
  return round(bps / 1e9, 2);
}

/** Plain routed forwarding to the first VMI on the EIP's path, for the time of `fn`. */
async function withPlainPath<T>(
  lab: Lab,
  v: Variant,
  vmi: string,
  eip: string,
  fn: () => Promise<T>,
): Promise<T> {
  const router = lab.describe().router;
  const route = [`${vmi}/32`, "via", eip, "dev", router.publicDevice];
  const rule = ["FORWARD", "-d", `${vmi}/32`, "-p", "tcp", "--dport", String(IPERF_PORT)];
  const comment = ["-m", "comment", "--comment", PLAIN_COMMENT, "-j", "ACCEPT"];
  const ipt = `iptables-${v.mode}`;
  await lab.exec(router.namespace, ["ip", "route", "add", ...route]);
  await lab.nodeExec(AGENT_NODE, [ipt, "-w", "5", "-I", ...rule, ...comment]);
  try {
    return await fn();
  } finally {
    await lab.nodeExec(AGENT_NODE, [ipt, "-w", "5", "-D", ...rule, ...comment]);
    await lab.exec(router.namespace, ["ip", "route", "del", ...route]);
  }
}

/** Both measures with the agent holding `held` bindings, `first` and `last` among them. */
export async function measureTraffic(
  lab: Lab,
  v: Variant,
  vmis: TrafficVmis,
  held: number,
  first: Pair,
  last: Pair,
  s: Settings,
  log: (line: string) => void,
): Promise<TrafficResult> {
  const [firstRule, lastRule] = [
    await dnatPosition(lab, v, first.eip),
    await dnatPosition(lab, v, last.eip),
  ];
  // Untimed: the neighbour entries and the listeners' first accepts.
  const warm = { ...s, connRoundMs: 500 };
  await connRound(lab, first.eip, warm);
  await connRound(lab, last.eip, warm);
  const rounds = { first: [] as ConnRound[], last: [] as ConnRound[] };
  // Alternating, so that a change in the machine's load meets both alike.
  for (let r = 0; r < s.connRounds; r++) {
    rounds.first.push(await connRound(lab, first.eip, s));
    rounds.last.push(await connRound(lab, last.eip, s));
  }
  const perSec = (xs: readonly ConnRound[]) => round(median(xs.map((x) => x.perSec)));
  const failed = [...rounds.first, ...rounds.last].reduce((a, x) => a + x.failures, 0);
  log(
    `  new connections/s (${s.connLoops} loops, ${s.connRounds} rounds of ${s.connRoundMs} ms): first EIP ${rounds.first.map((x) => x.perSec).join(", ")}; last ${rounds.last.map((x) => x.perSec).join(", ")}${failed > 0 ? `; ${failed} failed` : ""}` +
      (firstRule !== undefined ? ` (DNAT rules ${firstRule} and ${String(lastRule)})` : ""),
  );
  const gbps = { plain: [] as number[], first: [] as number[], last: [] as number[] };
  for (let r = 0; r < s.iperfRounds; r++) {
    gbps.plain.push(
      await withPlainPath(lab, v, vmis.first.address, first.eip, () =>
        iperf(lab, vmis.first.address, s),
      ),
    );
    gbps.first.push(await iperf(lab, first.eip, s));
    gbps.last.push(await iperf(lab, last.eip, s));
  }
  log(
    `  iperf3 Gbit/s: plain ${gbps.plain.join(", ")}; first EIP ${gbps.first.join(", ")}; last EIP ${gbps.last.join(", ")}`,
  );
  return {
    held,
    first,
    last,
    firstRule,
    lastRule,
    connLoops: s.connLoops,
    connRounds: rounds,
    firstPerSec: perSec(rounds.first),
    lastPerSec: perSec(rounds.last),
    gbps,
    plainGbps: round(median(gbps.plain), 2),
    firstGbps: round(median(gbps.first), 2),
    lastGbps: round(median(gbps.last), 2),
  };
}
