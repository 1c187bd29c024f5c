// What the per-EIP traffic counters (docs/traffic.md) cost a bind: bind latency with 10,000
// bindings held, with counting on (--traffic-interval 10, the default) and off
// (--traffic-interval 0), in the same run, on each dataplane: iptables on the nft and the
// legacy backend, and nftables. It prints figures and never asserts on them.
//
//   node dist/bench/counter-bench.js [--held N] [--binds S] [--rounds R]
//
// Needs root. Each dataplane gets a one-node lab of its own (torn down at the end, and on
// failure). The agent restores N bindings from its state file, then binds S new EIPs one
// after the other, each timed from the request to the reply and unbound again (untimed).
// Counting on and off alternate R times each (on, off, on, off...), each round a fresh agent
// on the same kernel, so that a drift of the shared machine's load hits both alike.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgentClient } from "../src/common/agent-api.js";
import { Lab, defaultPrefix } from "../src/lab/lab.js";
import { machine, now, round, stats } from "./common.js";
import {
  AGENT_BIN,
  EIP_CIDR,
  GATEWAY_DEV,
  GATEWAY_IP,
  INTERNAL_NET,
  heldPair,
} from "./agent-bench/shared.js";
import { intToIpv4, ipv4ToInt } from "./common.js";

const VARIANTS = [
  { mode: "nft", dataplane: "iptables" },
  { mode: "legacy", dataplane: "iptables" },
  { mode: "nft", dataplane: "nftables" },
] as const;

const PROBE_EIP = ipv4ToInt("100.65.0.0");
const PROBE_VMI = ipv4ToInt("10.201.0.0");

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  const value = at === -1 ? fallback : Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} needs a positive integer`);
  return value;
}

interface Row {
  variant: string;
  counting: "on" | "off";
  samples: number[];
}

async function benchVariant(
  v: (typeof VARIANTS)[number],
  held: number,
  binds: number,
  rounds: number,
): Promise<Row[]> {
  const prefix = `${defaultPrefix().replace(/^keip-/, "keip-cbench-")}-${v.dataplane.slice(0, 3)}${v.mode.slice(0, 3)}`;
  const lab = await Lab.up({ nodes: 1, iptablesModes: v.mode, prefix, removeOnExit: true });
  const name = `${v.dataplane} on iptables-${v.mode}`;
  const rows: Row[] = [
    { variant: name, counting: "on", samples: [] },
    { variant: name, counting: "off", samples: [] },
  ];
  try {
    const stateDir = lab.stateDir("counter-bench");
    const since = new Date().toISOString();
    const bindings = Array.from({ length: held }, (_, i) => ({ ...heldPair(i), since }));
    writeFileSync(join(stateDir, "bindings.json"), JSON.stringify({ version: 1, bindings }));
    let probe = 0;
    for (let r = 0; r < rounds * 2; r++) {
      const row = rows[r % 2] as Row;
      const socket = join(stateDir, "agent.sock");
      const proc = await lab.spawnIn(
        lab.nodeNamespace(1),
        [
          process.execPath,
          AGENT_BIN,
          ...["--iptables-mode", v.mode, "--dataplane", v.dataplane],
          ...["--eip-cidr", EIP_CIDR, "--gateway-ip", GATEWAY_IP, "--gateway-dev", GATEWAY_DEV],
          ...["--internal-net", INTERNAL_NET, "--listen-address", "127.0.0.1"],
          ...["--metrics-address", "127.0.0.1:9127", "--state-dir", stateDir],
          ...["--unix-socket", socket, "--seed-state-dir", join(stateDir, "no-seed")],
          ...["--traffic-interval", row.counting === "on" ? "10" : "0", "--log-level", "warn"],
        ],
        { name: `agent-${r}` },
      );
      const client = new AgentClient(`unix:${socket}`);
      try {
        // Ready once it answers (it serves gRPC after the restore).
        for (const end = now() + 300_000; ;) {
          if (now() > end) throw new Error(`the agent did not restore ${held} bindings`);
          const listed = await client.listBindings(5000).catch(() => undefined);
          if (listed !== undefined && listed.inSync && listed.bindings.length === held) break;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        for (let i = 0; i < binds + 5; i++) {
          const pair = { eip: intToIpv4(PROBE_EIP + probe), vmi: intToIpv4(PROBE_VMI + probe) };
          probe++;
          const t0 = now();
          const rsp = await client.eipOperate({
            action: "bind",
            eipAddr: pair.eip,
            vmiAddr: pair.vmi,
          });
          const ms = now() - t0;
          if (rsp.result !== "Succeed") throw new Error(`bind failed: ${rsp.reason}`);
          if (i >= 5) row.samples.push(ms); // the first few warm the agent up
          await client.eipOperate({ action: "unbind", eipAddr: pair.eip, vmiAddr: pair.vmi });
        }
      } finally {
        client.close();
        await proc.stop();
      }
    }
  } finally {
    await lab.down();
  }
  return rows;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write("counter-bench needs root: it builds network namespaces\n");
    return 2;
  }
  const held = option("--held", 10_000);
  const binds = option("--binds", 200);
  const rounds = option("--rounds", 2);
  const started = now();
  const rows: Row[] = [];
  for (const v of VARIANTS) rows.push(...(await benchVariant(v, held, binds, rounds)));
  const m = machine();
  process.stdout.write(
    `counter-bench: bind latency with ${held} bindings held, counting on (--traffic-interval 10) and off (0); ${binds} binds x ${rounds} rounds each; ${m.nproc} CPUs (${m.model}), ${m.kernel}, load ${m.loadavg}\n\n`,
  );
  const header = ["dataplane", "counting", "binds", "p50 ms", "p99 ms", "mean ms"];
  const lines = [header];
  for (const r of rows) {
    const s = stats(r.samples);
    lines.push([r.variant, r.counting, String(s.n), String(s.p50), String(s.p99), String(s.mean)]);
  }
  const widths = header.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? "").length)));
  for (const l of lines) {
    process.stdout.write(`${l.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ")}\n`);
  }
  process.stdout.write(`\ntook ${round((now() - started) / 1000, 0)} s\n`);
  return 0;
}

process.exitCode = await main();
