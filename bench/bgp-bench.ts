// The BGP benchmark: how soon a bound EIP's route is in the EIP router's kernel table, and
// how fast a node's EIPs are announced when its agent starts. It prints figures next to a
// BASELINE and never asserts on them.
//
//   node dist/bench/bgp-bench.js [--quick] [--binds N] [--held N] [--json FILE]
//
// Needs root. It builds its own lab (torn down at the end, on failure and on Ctrl-C): BIRD 2
// on the router, kube-eip's agent on node 1, the baseline on node 2. The router's kernel
// table is watched with `ip -o monitor route` (each line timestamped as it arrives here).
//
// kube-eip (eip_agent --bgp-type gobgp, its own gobgpd):
// - bind -> route: one client binds N EIPs one after the other; for each, the time from the
//   bind's reply to the route's arrival in the router's kernel table; then unbinds them, and
//   the time from the unbind's reply to the route's removal (negative: the route was gone
//   before the reply, as withdrawals come before the NAT is removed);
// - restore: M saved bindings, gobgpd and BIRD restarted empty (a node boot): time from the
//   agent's spawn to the first route at the router and to the router's table holding all M
//   (polled every 20 ms), and the rate between them; once with gobgpd only connecting out (the default: gobgpd waits 5 to 10 s
//   before its first attempt) and once with --bgp-listen-port 179 (the router connects in);
// - restart: with M routes at the router, SIGKILL the agent and start it again: routes the
//   router lost meanwhile (gobgpd outlives the agent), and the time until it serves again.
//
// Baseline: the seed announces nothing at all (its BGP manager is an empty stub), so the
// baseline is what a script beside it would do: gobgpd in node 2, and one `gobgp global rib
// add` CLI call per EIP (the documented way to use gobgpd by hand), timed the same way.
import { execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { AgentClient } from "../src/common/agent-api.js";
import { type BgpRouter, NODE_AS, startBgpRouter } from "../src/lab/bgp-router.js";
import { AGENT_BIN } from "../src/lab/agents.js";
import { Lab, type LabProcess, defaultPrefix } from "../src/lab/lab.js";
import { stopPids } from "../src/lab/netns.js";
import {
  type LatencyStats,
  intToIpv4,
  ipv4ToInt,
  machine,
  now,
  round,
  sleep,
  stats,
} from "./common.js";

const EIP_CIDR = "100.64.0.0/10";
const GATEWAY_IP = "100.64.0.1";
const EIP_BASE = ipv4ToInt("100.64.1.0");
const VMI_BASE = ipv4ToInt("10.200.0.1");
const BASELINE_EIP_BASE = ipv4ToInt("100.96.0.0");

interface Settings {
  readonly binds: number;
  readonly held: number;
  readonly baselineCapMs: number;
  readonly jsonFile: string | undefined;
  readonly quick: boolean;
}

function parseSettings(argv: readonly string[]): Settings {
  let binds: number | undefined;
  let held: number | undefined;
  let jsonFile: string | undefined;
  const quick = argv.includes("--quick");
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1 || v > 60000) throw new Error(`${arg}: 1 to 60000`);
      return v;
    };
    if (arg === "--binds") binds = int();
    else if (arg === "--held") held = int();
    else if (arg === "--json") jsonFile = argv[++i];
    else if (arg !== "--quick") {
      throw new Error(
        "usage: node dist/bench/bgp-bench.js [--quick] [--binds N] [--held N] [--json FILE]",
      );
    }
  }
  return {
    binds: binds ?? (quick ? 50 : 1000),
    held: held ?? (quick ? 500 : 10000),
    baselineCapMs: quick ? 10_000 : 60_000,
    jsonFile,
    quick,
  };
}

const eip = (i: number) => intToIpv4(EIP_BASE + i);
const vmi = (i: number) => intToIpv4(VMI_BASE + i);

/** The router's kernel table as it changes: arrival and removal times of each /32. */
class RouteWatch {
  readonly added = new Map<string, number>();
  readonly removed = new Map<string, number>();
  private readonly child;

  constructor(private readonly ns: string) {
    this.child = spawn("ip", ["netns", "exec", ns, "ip", "-o", "monitor", "route"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    let buffered = "";
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk: string) => {
      const t = now();
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^(Deleted )?(\d+\.\d+\.\d+\.\d+) via .* proto bird/.exec(line);
        if (!m?.[2]) continue;
        if (m[1]) this.removed.set(m[2], t);
        else this.added.set(m[2], t);
      }
    });
  }

  clear(): void {
    this.added.clear();
    this.removed.clear();
  }

  async waitAdded(count: number, timeoutMs: number): Promise<boolean> {
    const end = now() + timeoutMs;
    while (this.added.size < count && now() < end) await sleep(5);
    return this.added.size >= count;
  }

  /**
   * Polls the table itself until it holds `count` routes of BIRD's (a burst of thousands can
   * overflow the monitor's netlink buffer, so its lines are not counted on): resolves to the
   * time it first did, or NaN.
   */
  async waitTable(count: number, timeoutMs: number): Promise<{ at: number; routes: number }> {
    const end = now() + timeoutMs;
    let routes = 0;
    while (now() < end) {
      const out = execFileSync("ip", ["-n", this.ns, "-o", "route", "show", "proto", "bird"], {
        encoding: "utf8",
      });
      routes = out.split("\n").filter((l) => l.trim() !== "").length;
      if (routes >= count) return { at: now(), routes };
      await sleep(20);
    }
    return { at: NaN, routes };
  }

  stop(): void {
    this.child.kill();
  }
}

/** kube-eip's agent on node 1, with its own gobgpd. */
class Agent {
  proc: LabProcess | undefined;
  private serial = 0;
  readonly stateDir: string;
  readonly socket: string;

  constructor(
    private readonly lab: Lab,
    private readonly router: BgpRouter,
  ) {
    this.stateDir = lab.stateDir("bench-agent");
    this.socket = join(this.stateDir, "agent.sock");
  }

  async start(
    extra: readonly string[] = [],
  ): Promise<{ t0: number; servingMs: number; events: string }> {
    const t0 = now();
    const wall0 = Date.now();
    this.proc = await this.lab.spawnIn(
      this.lab.nodeNamespace(1),
      [
        process.execPath,
        AGENT_BIN,
        "--eip-cidr",
        EIP_CIDR,
        "--gateway-ip",
        GATEWAY_IP,
        "--gateway-dev",
        "eth1",
        "--internal-net",
        "10.0.0.0/8",
        "--listen-address",
        "127.0.0.1",
        "--metrics-address",
        "",
        "--state-dir",
        this.stateDir,
        "--unix-socket",
        this.socket,
        "--seed-state-dir",
        join(this.stateDir, "no-seed"),
        "--log-level",
        "info",
        ...this.router.agentArgs(1),
        ...extra,
      ],
      { name: `agent-${++this.serial}`, waitFor: '"msg":"serving gRPC"', timeoutMs: 300_000 },
    );
    return { t0, servingMs: now() - t0, events: this.timeline(wall0) };
  }

  /** The agent's start-up as its log tells it: ms after spawn, message. */
  private timeline(wall0: number): string {
    const wanted =
      /gobgpd started|BGP speaker started|BGP peer added|kernel state restored|serving gRPC|adopting/;
    return (this.proc?.output() ?? "")
      .split("\n")
      .flatMap((line) => {
        try {
          const j = JSON.parse(line) as { time: string; msg: string };
          return wanted.test(j.msg) ? [`${Date.parse(j.time) - wall0} ms ${j.msg}`] : [];
        } catch {
          return [];
        }
      })
      .join("; ");
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc) return;
    proc.child.kill("SIGKILL");
    await proc.exited;
  }

  /** Stops the gobgpd the agent left running (a node boot starts without it). */
  async killSpeaker(): Promise<void> {
    const { readFile } = await import("node:fs/promises");
    // gobgpd.pid is a JSON record (PID, start time, executable, argv): see src/bgp/own-process.ts.
    const record = JSON.parse(await readFile(join(this.stateDir, "gobgpd.pid"), "utf8")) as {
      pid: number;
    };
    const pid = record.pid;
    if (pid > 0) await stopPids([pid]);
  }

  writeState(n: number): void {
    const since = new Date().toISOString();
    const bindings = Array.from({ length: n }, (_, i) => ({ eip: eip(i), vmi: vmi(i), since }));
    writeFileSync(join(this.stateDir, "bindings.json"), JSON.stringify({ version: 1, bindings }));
    writeFileSync(join(this.stateDir, "bindings.journal"), "");
  }
}

interface RestoreFigures {
  readonly mode: string;
  readonly routes: number;
  readonly servingMs: number;
  readonly firstRouteMs: number;
  readonly lastRouteMs: number;
  readonly routesPerSec: number;
  readonly events: string;
}

async function restoreRun(
  lab: Lab,
  agent: Agent,
  router: () => Promise<BgpRouter>,
  watch: RouteWatch,
  held: number,
  mode: "connect-out" | "listen",
): Promise<RestoreFigures> {
  await agent.kill();
  await agent.killSpeaker();
  await router(); // a fresh BIRD: nothing learned, nothing stale
  agent.writeState(held);
  watch.clear();
  const { t0, servingMs, events } = await agent.start(
    mode === "listen" ? ["--bgp-listen-port", "179"] : [],
  );
  const table = await watch.waitTable(held, 120_000);
  const first = Math.min(...watch.added.values()) - t0;
  const last = table.at - t0;
  if (table.routes < held)
    process.stdout.write(`  ! only ${table.routes}/${held} routes arrived\n`);
  return {
    mode,
    routes: table.routes,
    servingMs: round(servingMs),
    firstRouteMs: round(first),
    lastRouteMs: round(last),
    routesPerSec: round(table.routes / Math.max(0.001, (last - first) / 1000)),
    events,
  };
}

interface BaselineFigures {
  readonly bindToRoute: LatencyStats;
  readonly announced: number;
  readonly perSec: number;
  readonly cappedByTime: boolean;
}

/** gobgpd in node 2 driven by one `gobgp` CLI call per EIP. */
async function baseline(
  lab: Lab,
  watch: RouteWatch,
  binds: number,
  held: number,
  capMs: number,
): Promise<BaselineFigures> {
  const node = lab.node(2);
  const routerAddress = lab.describe().router.mgmtAddress;
  const speaker = await lab.spawnIn(
    node.namespace,
    ["gobgpd", "--api-hosts=127.0.0.1:50051", "--pprof-disable", "--log-level=warn"],
    { name: "baseline-gobgpd" },
  );
  const cli = (args: readonly string[]) => lab.nodeExec(2, ["gobgp", ...args]);
  // gobgpd's API comes up a moment after the process: retry until the speaker runs. (It
  // listens on 179 in node 2; `gobgp global` cannot say -1.)
  const running = async () =>
    /AS:\s+[1-9]/.test((await cli(["global"]).catch(() => undefined))?.stdout ?? "");
  for (let i = 0; !(await running()); i++) {
    if (i > 100) throw new Error("the baseline's gobgpd did not start");
    await cli(["global", "as", String(NODE_AS), "router-id", node.mgmtAddress]).catch(() => {});
    await sleep(100);
  }
  await cli(["neighbor", "add", routerAddress, "as", "65000"]);
  const add = (addr: string) =>
    cli([
      "global",
      "rib",
      "add",
      "-a",
      "ipv4",
      `${addr}/32`,
      "nexthop",
      node.mgmtAddress,
      "origin",
      "igp",
    ]);
  // Wait for the session: one route through.
  watch.clear();
  await add(intToIpv4(BASELINE_EIP_BASE - 1));
  if (!(await watch.waitAdded(1, 30_000))) throw new Error("baseline session did not come up");
  watch.clear();
  const latencies: number[] = [];
  for (let i = 0; i < binds; i++) {
    const addr = intToIpv4(BASELINE_EIP_BASE + i);
    await add(addr);
    const replied = now();
    while (!watch.added.has(addr) && now() - replied < 10_000) await sleep(1);
    latencies.push((watch.added.get(addr) ?? NaN) - replied);
  }
  // The bulk rate: one CLI call per EIP, as a script would restore a node's EIPs.
  const t0 = now();
  let announced = 0;
  for (let i = 0; i < held && now() - t0 < capMs; i++) {
    await add(intToIpv4(BASELINE_EIP_BASE + binds + i));
    announced++;
  }
  await watch.waitTable(1 + binds + announced, 30_000);
  const wall = now() - t0;
  await speaker.stop();
  return {
    bindToRoute: stats(latencies),
    announced,
    perSec: round(announced / (wall / 1000)),
    cappedByTime: announced < held,
  };
}

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write("bgp-bench needs root: it builds network namespaces\n");
    return 2;
  }
  const m = machine({ gobgpd: ["gobgpd", ["--version"]], bird: ["bird", ["--version"]] });
  process.stdout.write(
    `kube-eip BGP benchmark${s.quick ? " (--quick: a smoke run)" : ""}\n` +
      Object.entries(m)
        .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
        .join("\n") +
      `\n  ${s.binds} sequential binds; ${s.held} EIPs restored at start\n\n`,
  );
  const lab = await Lab.up({
    nodes: 2,
    prefix: defaultPrefix().replace(/^keip-/, "keip-bench-"),
    removeOnExit: true,
  });
  const routerNs = lab.describe().router.namespace;
  let router: BgpRouter | undefined;
  const freshRouter = async () => {
    await router?.stop();
    router = await startBgpRouter(lab, { acceptNet: EIP_CIDR });
    return router;
  };
  const watch = new RouteWatch(routerNs);
  try {
    const agent = new Agent(lab, await freshRouter());
    // 1. bind -> route at the router, one bind at a time.
    await agent.start();
    const client = new AgentClient(`unix:${agent.socket}`);
    const first = now();
    while ((await (router as BgpRouter).sessions()).get(1) !== "Established") {
      if (now() - first > 30_000) throw new Error("session did not come up");
      await sleep(50);
    }
    const bindLatency: number[] = [];
    const unbindLatency: number[] = [];
    for (let i = 0; i < s.binds; i++) {
      const rsp = await client.eipOperate({ action: "bind", eipAddr: eip(i), vmiAddr: vmi(i) });
      const replied = now();
      if (rsp.result !== "Succeed") throw new Error(`bind failed: ${rsp.reason}`);
      while (!watch.added.has(eip(i)) && now() - replied < 10_000) await sleep(1);
      bindLatency.push((watch.added.get(eip(i)) ?? NaN) - replied);
    }
    for (let i = 0; i < s.binds; i++) {
      const rsp = await client.eipOperate({ action: "unbind", eipAddr: eip(i), vmiAddr: vmi(i) });
      const replied = now();
      if (rsp.result !== "Succeed") throw new Error(`unbind failed: ${rsp.reason}`);
      while (!watch.removed.has(eip(i)) && now() - replied < 10_000) await sleep(1);
      unbindLatency.push((watch.removed.get(eip(i)) ?? NaN) - replied);
    }
    client.close();
    const bind = stats(bindLatency);
    const unbind = stats(unbindLatency);
    process.stdout.write(
      `bind reply -> route at the router (ms): p50 ${bind.p50} p99 ${bind.p99} max ${bind.max} (n ${bind.n})\n` +
        `unbind reply -> route gone (ms):        p50 ${unbind.p50} p99 ${unbind.p99} max ${unbind.max}\n`,
    );

    // 2. restore at start, as after a node boot.
    const restores: RestoreFigures[] = [];
    for (const mode of ["connect-out", "listen"] as const) {
      const r = await restoreRun(lab, agent, freshRouter, watch, s.held, mode);
      restores.push(r);
      process.stdout.write(
        `restore ${r.routes} EIPs (${mode}): serving after ${r.servingMs} ms; first route at the router ${r.firstRouteMs} ms, last ${r.lastRouteMs} ms after spawn; ${r.routesPerSec} routes/s\n    agent log: ${r.events}\n`,
      );
    }

    // 3. agent restart with its gobgpd left running.
    watch.clear();
    await agent.kill();
    const restart = await agent.start(["--bgp-listen-port", "179"]);
    await sleep(2000);
    process.stdout.write(
      `agent restart with ${s.held} EIPs: serving after ${round(restart.servingMs)} ms; routes withdrawn at the router meanwhile: ${watch.removed.size}\n`,
    );
    await agent.kill();
    await agent.killSpeaker();

    // 4. baseline.
    const base = await baseline(lab, watch, s.binds, s.held, s.baselineCapMs);
    process.stdout.write(
      `\nBASELINE (gobgp CLI per EIP; the seed itself announces nothing):\n` +
        `  announce -> route at the router (ms): p50 ${base.bindToRoute.p50} p99 ${base.bindToRoute.p99} (n ${base.bindToRoute.n})\n` +
        `  bulk: ${base.announced} EIPs at ${base.perSec}/s${base.cappedByTime ? ` (stopped at the ${s.baselineCapMs / 1000} s cap; ${s.held} would take ${round(s.held / base.perSec)} s)` : ""}\n`,
    );
    if (s.jsonFile) {
      writeFileSync(
        s.jsonFile,
        JSON.stringify({ machine: m, settings: s, bind, unbind, restores, restart, base }, null, 2),
      );
    }
    return 0;
  } finally {
    watch.stop();
    await lab.down();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bgp-bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
