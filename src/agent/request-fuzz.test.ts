// A seeded property test of the whole agent (flags, gRPC edge, request checks, binding
// table, store, planner, kernel managers) over SimKernel, a strict model of the node's
// kernel that starts with random state that is not ours. Thousands of generated requests
// (good ones, and every address class and spelling an attacker or a typo could send) must
// keep these true:
// - a refusal (errPhase 0, or a gRPC error) writes no command and leaves the state files
//   byte for byte as they were;
// - every command, stdin line and argument fits its tool's grammar (SimKernel's checks);
// - the agent's table equals a plain model of eip -> vmi, and each request's answer is the
//   one the model predicts;
// - nothing that was there before the agent is deleted or rewritten, and the gateway's and
//   the node's addresses are never added.
// KEIP_FUZZ_SEED=N replays a run; KEIP_FUZZ_REQUESTS sets the number of requests.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { freePort } from "../common/free-port.js";
import { AgentClient, type EipOpRsp } from "../common/agent-api.js";
import { SimKernel } from "../kernel/sim-kernel.js";
import { type RunningAgent, startAgent } from "./agent.js";
import { parseAgentArgs } from "./config.js";

const SEED = Number(process.env.KEIP_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const REQUESTS = Number(process.env.KEIP_FUZZ_REQUESTS ?? 10_000);
const ROUNDS = 4;

/** mulberry32: small, fast, good enough to spread requests; the seed replays a run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GATEWAY = "192.168.18.1";
const NODE_PUBLIC = "192.168.18.100";
const CNI_ADDR = "10.244.1.1";
const MGMT = "10.0.0.11";
const INTERNAL = ["10.244.0.0/16", "10.96.0.0/12"];

/** The node's own state, and a random choice of others' state on top of it. */
function seedKernel(rand: () => number, sim: SimKernel): string[] {
  const ip = sim.ip;
  for (const dev of ["lo", "eth0", "eth1", "cni0"]) ip.links.add(dev);
  const foreignAddrs: [string, string, number][] = [
    ["lo", "127.0.0.1", 8],
    ["eth0", MGMT, 24],
    ["cni0", CNI_ADDR, 24],
  ];
  if (rand() < 0.7) foreignAddrs.push(["eth1", NODE_PUBLIC, 24]);
  // keepalived / kube-vip VIPs inside the EIP network, as /32s on the gateway device.
  for (let i = 0; i < 3; i++)
    if (rand() < 0.6) foreignAddrs.push(["eth1", `192.168.18.${240 + i}`, 32]);
  if (rand() < 0.5) foreignAddrs.push(["eth0", `192.168.18.${230 + Math.floor(rand() * 5)}`, 32]);
  for (const [dev, address, prefix] of foreignAddrs) {
    ip.addresses.push({ dev, address, prefix, attrs: {}, foreign: true });
  }
  for (let i = 0; i < 2; i++) {
    if (rand() < 0.5)
      ip.proxies.push({ dev: "eth1", address: `192.168.18.${245 + i}`, attrs: {}, foreign: true });
  }
  const main = (dst: string, extra: object) =>
    ip.routes.push({
      table: "main",
      type: "unicast",
      dst,
      metric: 0,
      tos: "0",
      foreign: true,
      ...extra,
    });
  main("10.0.0.0/24", { dev: "eth0", scope: "link", proto: "kernel" });
  main("default", { gateway: "10.0.0.1", dev: "eth0" });
  main("10.244.1.0/24", { dev: "cni0", scope: "link", proto: "kernel" });
  if (rand() < 0.5) main("192.168.18.128/25", { dev: "eth1", scope: "link", proto: "static" });
  ip.rules.push({ priority: 0, from: "all", table: "local", foreign: true });
  ip.rules.push({ priority: 32766, from: "all", table: "main", foreign: true });
  if (rand() < 0.5)
    ip.rules.push({ priority: 1000, from: "10.244.9.0/24", table: "200", foreign: true });
  if (rand() < 0.5) {
    sim.sets.set("KUBE-CLUSTER-IP", {
      type: "hash:ip",
      options: "family inet hashsize 1024 maxelem 65536",
      members: new Set(["10.96.0.1"]),
      foreign: true,
    });
  }
  const filter = sim.tables.get("filter");
  const nat = sim.tables.get("nat");
  assert.ok(filter && nat);
  (filter.get("FORWARD") as { policy: string }).policy = "DROP";
  filter.set("CNI-FORWARD", {
    builtin: false,
    policy: "-",
    foreign: true,
    rules: [{ spec: "-s 10.244.0.0/16 -d 10.244.0.0/16 -j ACCEPT", foreign: true }],
  });
  filter.get("FORWARD")?.rules.push({ spec: "-j CNI-FORWARD", foreign: true });
  nat.set("KUBE-SERVICES", { builtin: false, policy: "-", foreign: true, rules: [] });
  nat.get("PREROUTING")?.rules.push({ spec: "-j KUBE-SERVICES", foreign: true });
  for (const a of ip.addresses) sim.neverAdd.add(a.address);
  sim.neverAdd.add(GATEWAY);
  return ip.addresses.map((a) => a.address);
}

/** Strings that are not one canonical address, made from one that is. */
function mutate(rand: () => number, good: string): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const parts = good.split(".");
  const fullWidth = good.replace(/\d/g, (d) => String.fromCharCode(0xff10 + Number(d)));
  return pick([
    parts.map((p, i) => (i === 2 ? `0${p}` : p)).join("."),
    ` ${good}`,
    `${good} `,
    `${good}\n`,
    `${good}\0`,
    `${good}\u2028`,
    fullWidth,
    `::ffff:${good}`,
    `${good}/32`,
    "",
    parts.slice(0, 3).join("."),
    `${good}.1`,
    `0x${parts.map((p) => Number(p).toString(16).padStart(2, "0")).join("")}`,
    `+${good}`,
    `${good};reboot`,
    "x".repeat(1 << 20),
    `${good}${"9".repeat(1000)}`,
  ]);
}

interface Model {
  readonly byEip: Map<string, string>;
  readonly byVmi: Map<string, string>;
}

/** The answer the rules give, from a plain model that shares no code with the agent. */
function expected(m: Model, held: ReadonlySet<string>, action: string, eip: string, vmi: string) {
  const dotted = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
  if (action !== "bind" && action !== "unbind") return false;
  if (!dotted.test(eip) || !dotted.test(vmi)) return false;
  if (action === "unbind") return m.byEip.get(eip) === undefined || m.byEip.get(eip) === vmi;
  const [e1, e2, e3, e4] = eip.split(".").map(Number) as [number, number, number, number];
  if (e1 !== 192 || e2 !== 168 || e3 !== 18 || e4 === 0 || e4 === 255 || eip === GATEWAY)
    return false;
  if (held.has(eip)) return false;
  const [v1, v2, v3, v4] = vmi.split(".").map(Number) as [number, number, number, number];
  const inPods = v1 === 10 && v2 === 244 && !(v3 === 0 && v4 === 0) && !(v3 === 255 && v4 === 255);
  const inServices =
    v1 === 10 && v2 >= 96 && v2 < 112 && vmi !== "10.96.0.0" && vmi !== "10.111.255.255";
  if (!(inPods || inServices) || held.has(vmi)) return false;
  const atEip = m.byEip.get(eip);
  const atVmi = m.byVmi.get(vmi);
  return atEip === vmi || (atEip === undefined && atVmi === undefined);
}

async function stateFiles(dir: string): Promise<string> {
  const read = (f: string) => readFile(join(dir, f), "utf8").catch(() => "<none>");
  return `${await read("bindings.json")}\n--\n${await read("bindings.journal")}`;
}

async function startOn(
  sim: SimKernel,
  dir: string,
  arp: boolean,
): Promise<[RunningAgent, AgentClient]> {
  const port = await freePort();
  const config = parseAgentArgs([
    "--gateway-ip",
    GATEWAY,
    "--gateway-dev",
    "eth1",
    "--eip-cidr",
    "192.168.18.0/24",
    ...INTERNAL.flatMap((n) => ["--internal-net", n]),
    "--cni-dev",
    "cni0",
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
    "127.0.0.1",
    "--port",
    String(port),
    "--metrics-address",
    "",
    "--resync-interval",
    "3600",
    ...(arp ? ["--arp-poisoning"] : []),
  ]);
  const agent = await startAgent(config, { runner: sim, logger: pino({ level: "silent" }) });
  return [agent, new AgentClient(`127.0.0.1:${port}`)];
}

test(`generated requests never hurt the node (seed ${SEED})`, async (t) => {
  const rand = prng(SEED);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const counts = { requests: 0, refused: 0, bound: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    const dir = await mkdtemp(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "keip-fuzz-"));
    const sim = new SimKernel();
    const held = new Set(seedKernel(rand, sim));
    const arp = round % 2 === 1;
    let [agent, client] = await startOn(sim, dir, arp);
    const model: Model = { byEip: new Map(), byVmi: new Map() };
    const eips = [
      ...held,
      GATEWAY,
      "192.168.18.0",
      "192.168.18.255",
      "127.0.0.1",
      "0.0.0.0",
      "169.254.1.1",
      "224.0.0.1",
      "255.255.255.255",
      "10.244.1.20",
      "198.51.100.7",
    ];
    const vmis = [
      ...held,
      "10.244.0.0",
      "10.244.255.255",
      "10.96.0.0",
      "192.168.18.20",
      "127.0.0.1",
      "0.0.0.0",
      "224.0.0.1",
    ];
    try {
      const perRound = Math.ceil(REQUESTS / ROUNDS);
      for (let i = 0; i < perRound; i++) {
        if (i === Math.floor(perRound / 2)) {
          // A restart in the middle: the saved table and the kernel must carry everything.
          client.close();
          await agent.stop();
          [agent, client] = await startOn(sim, dir, arp);
        }
        const r = rand();
        const action =
          r < 0.45
            ? "bind"
            : r < 0.8
              ? "unbind"
              : pick(["", "list", "Bind", "bind ", "unbind\0", "bind\n", "delete", "\u2028bind"]);
        const goodEip = `192.168.18.${2 + Math.floor(rand() * 60)}`;
        const goodVmi = `10.244.1.${2 + Math.floor(rand() * 60)}`;
        const e = rand();
        const eip = e < 0.6 ? goodEip : e < 0.85 ? pick(eips) : mutate(rand, goodEip);
        const v = rand();
        const vmi = v < 0.6 ? goodVmi : v < 0.85 ? pick(vmis) : mutate(rand, goodVmi);
        const want = expected(model, held, action, eip, vmi);
        const writesBefore = sim.writes().filter((c) => c.command !== "conntrack").length;
        // (A request the model expects to succeed and that is refused fails below anyway.)
        const filesBefore = want ? "" : await stateFiles(join(dir, "state"));
        let rsp: EipOpRsp | undefined;
        try {
          rsp = await client.eipOperate({ action, eipAddr: eip, vmiAddr: vmi });
        } catch {
          rsp = undefined; // refused at the gRPC edge (e.g. a message over the size limit)
        }
        counts.requests++;
        const what = `seed ${SEED} round ${round} request ${i}: ${action} ${JSON.stringify(eip).slice(0, 60)} -> ${JSON.stringify(vmi).slice(0, 60)}`;
        const ok = rsp?.result === "Succeed";
        assert.equal(
          ok,
          want,
          `${what}: answered ${JSON.stringify(rsp)}, the model says ${want ? "Succeed" : "Failed"}`,
        );
        if (!ok) {
          counts.refused++;
          assert.equal(
            rsp === undefined || rsp.errPhase === 0,
            true,
            `${what}: failed past the checks: ${rsp?.reason}`,
          );
          assert.ok(
            rsp === undefined || rsp.reason.length <= 1024,
            `${what}: reason of ${rsp?.reason.length} characters`,
          );
          const writesAfter = sim.writes().filter((c) => c.command !== "conntrack").length;
          assert.equal(
            writesAfter,
            writesBefore,
            `${what}: a refusal wrote ${JSON.stringify(sim.writes().slice(writesBefore))}`,
          );
          assert.equal(
            await stateFiles(join(dir, "state")),
            filesBefore,
            `${what}: a refusal changed the state files`,
          );
        } else if (action === "bind") {
          counts.bound++;
          model.byEip.set(eip, vmi);
          model.byVmi.set(vmi, eip);
        } else if (model.byEip.get(eip) === vmi) {
          model.byEip.delete(eip);
          model.byVmi.delete(vmi);
        }
        assert.deepEqual(sim.violations, [], `${what}: the kernel saw violations`);
        if (!ok && i % 50 !== 0) continue;
        const listed = (await client.listBindings()).bindings.map(
          (b) => `${b.eipAddr}=${b.vmiAddr}`,
        );
        const modelled = [...model.byEip].map(([e2, v2]) => `${e2}=${v2}`).sort();
        assert.deepEqual(listed.sort(), modelled, `${what}: the table differs from the model`);
      }
      // The kernel holds exactly the model's NAT.
      const dnat =
        sim.tables
          .get("nat")
          ?.get("KUBE-EIP-PREROUTING")
          ?.rules.map((x) => x.spec) ?? [];
      const modelled = [...model.byEip].map(
        ([e2, v2]) => `-d ${e2}/32 -j DNAT --to-destination ${v2}`,
      );
      assert.deepEqual(
        dnat.sort(),
        modelled.sort(),
        `seed ${SEED} round ${round}: DNAT differs from the model`,
      );
    } finally {
      client.close();
      await agent.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }
  t.diagnostic(
    `seed ${SEED}: ${counts.requests} requests, ${counts.refused} refused, ${counts.bound} binds`,
  );
  assert.ok(
    counts.bound > REQUESTS / 50 && counts.refused > REQUESTS / 5,
    `the generator must reach both sides: ${JSON.stringify(counts)}`,
  );
});
