// The agent's request path end to end over real gRPC on localhost, with recording fake
// subsystems in place of the kernel (the kernel path is tested for real in the lab).
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { AgentClient } from "../common/agent-api.js";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { KernelError, Phase } from "../kernel/manager.js";
import { runEipctl } from "../cli/eipctl.js";
import { SHOWN_MAX } from "./request.js";
import { BindingTable, type Change, type HeldBinding } from "./binding-table.js";
import { Dataplane } from "./dataplane.js";
import type { Subsystem } from "../kernel/subsystem.js";
import { AgentMetrics } from "./metrics.js";
import type { DesiredState } from "../model/desired.js";
import {
  AgentService,
  type AgentServerOptions,
  STREAMS_MAX,
  bindServer,
  buildGrpcServer,
  serverCredentials,
} from "./server.js";
import { BindingStore } from "./store.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";

const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);
const POLICY = {
  eipCidr: net("192.168.18.0/24"),
  internalNets: [net("10.244.0.0/16")],
  gatewayIp: "192.168.18.1",
};

class FakeKernel implements Subsystem {
  readonly name = "fake";
  readonly owns = "nothing";
  readonly stage = "kernel";
  applies = 0;
  failWith: KernelError | undefined;
  last: DesiredState | undefined;
  async sync(desired: DesiredState): Promise<number> {
    this.applies++;
    await new Promise((r) => setTimeout(r, 5));
    if (this.failWith) throw this.failWith;
    this.last = desired;
    return 1;
  }
  async read(): Promise<unknown> {
    return "snapshot";
  }
  adopt(): void {}
}

/** The real store, with failures and a gate a test can set. */
class FlakyStore {
  failWith: Error | undefined;
  /** While set, each write waits for it. */
  gate: Promise<void> | undefined;
  writes = 0;
  constructor(private readonly inner: BindingStore) {}
  save(bindings: readonly HeldBinding[]): Promise<void> {
    return this.write(() => this.inner.save(bindings));
  }
  record(changes: readonly Change[], bindings: readonly HeldBinding[]): Promise<void> {
    return this.write(() => this.inner.record(changes, bindings));
  }
  private async write(fn: () => Promise<void>): Promise<void> {
    this.writes++;
    await this.gate;
    if (this.failWith) throw this.failWith;
    return fn();
  }
}

let dir: string;
let server: grpc.Server;
let target: string;
let kernel: FakeKernel;
let store: BindingStore;
let saver: FlakyStore;
let dataplane: Dataplane;
let service: AgentService;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "keip-svc-"));
  kernel = new FakeKernel();
  store = new BindingStore(dir);
  saver = new FlakyStore(store);
  const table = new BindingTable();
  const logger = pino({ level: "silent" });
  const metrics = new AgentMetrics();
  dataplane = new Dataplane({
    table,
    store: saver,
    config: { ...TEST_PLAN_CONFIG, internalNets: ["10.244.0.0/16"] },
    subsystems: [kernel],
    logger,
    metrics,
    retryBaseMs: 10,
    retryMaxMs: 20,
  });
  service = new AgentService({
    table,
    dataplane,
    policy: POLICY,
    logger,
    metrics,
    // The last read of the kernel's counters, as the TrafficMonitor keeps it.
    traffic: {
      counts: (eip) =>
        eip === "192.168.18.100"
          ? { rxBytes: 1_500_000, txBytes: 700, rxPackets: 1040, txPackets: 2 }
          : { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0 },
    },
  });
  ({ server } = buildGrpcServer(service));
  const port = await bindServer(server, "127.0.0.1:0", serverCredentials(undefined));
  target = `127.0.0.1:${port}`;
});

afterEach(() => {
  // A failed test leaves no failure armed for the next.
  saver.failWith = undefined;
  saver.gate = undefined;
  kernel.failWith = undefined;
});

after(async () => {
  await dataplane.stop();
  server.forceShutdown();
  await rm(dir, { recursive: true, force: true });
});

async function ctl(...args: string[]) {
  let out = "";
  let err = "";
  const code = await runEipctl(["--target", target, ...args], {
    out: (t) => (out += t),
    err: (t) => (err += t),
  });
  return { code, out, err };
}

test("a client built from the seed's wire definition binds and unbinds", async () => {
  const def = protoLoader.loadSync(
    new URL("../../../e2e/fixtures/seed_eip_bind.proto", import.meta.url).pathname,
  );
  const Seed = (
    grpc.loadPackageDefinition(def) as unknown as {
      protoc: { EipAgent: grpc.ServiceClientConstructor };
    }
  ).protoc.EipAgent;
  const client = new Seed(target, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (...a: unknown[]) => void>;
  const call = (req: object) =>
    new Promise<{ result: string; errPhase: number }>((res, rej) =>
      client.EipOperate?.(req, (e: Error | null, r: { result: string; errPhase: number }) =>
        e ? rej(e) : res(r),
      ),
    );
  assert.deepEqual(
    await call({ action: "bind", eipAddr: "192.168.18.50", vmiAddr: "10.244.1.50" }),
    { result: "Succeed", errPhase: 0 },
  );
  assert.deepEqual(
    (await store.load())?.map((b) => b.eip),
    ["192.168.18.50"],
    "saved before the reply",
  );
  assert.deepEqual(
    await call({ action: "bind", eipAddr: "192.168.18.50", vmiAddr: "10.244.1.50" }),
    { result: "Succeed", errPhase: 0 },
  );
  assert.deepEqual(await call({ action: "bind", eipAddr: "bogus", vmiAddr: "10.244.1.50" }), {
    result: "Failed",
    errPhase: 0,
  });
  assert.deepEqual(
    await call({ action: "unbind", eipAddr: "192.168.18.50", vmiAddr: "10.244.1.50" }),
    { result: "Succeed", errPhase: 0 },
  );
  assert.deepEqual(await store.load(), []);
  client.close();
});

test("eipctl binds, lists as a table and as JSON, and unbinds; exit codes tell", async () => {
  let r = await ctl("--action", "bind", "--eip-ip", "192.168.18.100", "--vmi-ip", "10.244.1.10");
  assert.equal(r.code, 0, r.err);
  r = await ctl("--action", "list");
  assert.equal(r.code, 0);
  assert.match(
    r.out,
    /^EIP\s+VMI\s+SINCE\s+STATE\s+RX BYTES\s+TX BYTES\s+RX PACKETS\s+TX PACKETS\n192\.168\.18\.100\s+10\.244\.1\.10\s+\d{4}-\S+\s+applied\s+1500000\s+700\s+1040\s+2$/m,
  );
  r = await ctl("--action", "list", "--output", "json");
  const listed = JSON.parse(r.out) as {
    bindings: Record<string, unknown>[];
    inSync: boolean;
  };
  // The field names scripts read (docs/eipctl.md), numbers on the wire as uint64.
  assert.deepEqual(
    listed.bindings.map((b) => [
      b.eipAddr,
      b.vmiAddr,
      b.rxBytes,
      b.txBytes,
      b.rxPackets,
      b.txPackets,
    ]),
    [["192.168.18.100", "10.244.1.10", 1_500_000, 700, 1040, 2]],
  );
  assert.equal(listed.inSync, true);
  r = await ctl("--action", "bind", "--eip-ip", "192.168.18.100", "--vmi-ip", "10.244.1.11");
  assert.equal(r.code, 1);
  assert.match(r.err, /already bound to VMI 10\.244\.1\.10/);
  r = await ctl("--action", "bind", "--eip-ip", "10.1.1.1", "--vmi-ip", "10.244.1.11");
  assert.equal(r.code, 1);
  assert.match(r.err, /outside the EIP network/);
  r = await ctl("--action", "unbind", "--eip-ip", "192.168.18.100", "--vmi-ip", "10.244.1.10");
  assert.equal(r.code, 0, r.err);
  assert.equal((await ctl("--action", "bind", "--eip-ip", "192.168.18.100")).code, 2);
  assert.equal((await ctl("--action", "fly")).code, 2);
  r = await ctl("--action", "peers");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /BGP is off on this agent/);
  assert.equal((await ctl()).code, 2);
  const down = await runEipctl(["--target", "127.0.0.1:1", "--timeout", "2", "--action", "list"], {
    out: () => {},
    err: () => {},
  });
  assert.equal(down, 3);
});

test("concurrent requests share one apply", async () => {
  const before = kernel.applies;
  const client = new AgentClient(target);
  const rsps = await Promise.all(
    Array.from({ length: 32 }, (_, i) =>
      client.eipOperate({
        action: "bind",
        eipAddr: `192.168.18.${150 + i}`,
        vmiAddr: `10.244.2.${i + 10}`,
      }),
    ),
  );
  assert.ok(rsps.every((r) => r.result === "Succeed"));
  assert.ok(kernel.applies - before <= 3, `32 binds took ${kernel.applies - before} applies`);
  assert.equal(kernel.last?.ruleSources.length, 32);
  await Promise.all(
    Array.from({ length: 32 }, (_, i) =>
      client.eipOperate({
        action: "unbind",
        eipAddr: `192.168.18.${150 + i}`,
        vmiAddr: `10.244.2.${i + 10}`,
      }),
    ),
  );
  client.close();
});

test("a kernel failure answers Failed with its phase, and the loop retries until it heals", async () => {
  const client = new AgentClient(target);
  kernel.failWith = new KernelError(Phase.Nat, "iptables-restore: line 3 failed");
  const rsp = await client.eipOperate({
    action: "bind",
    eipAddr: "192.168.18.200",
    vmiAddr: "10.244.1.200",
  });
  assert.deepEqual(rsp, {
    result: "Failed",
    errPhase: 2,
    reason:
      "iptables-restore: line 3 failed; the binding is saved and the agent retries until the kernel holds it (ListBindings shows it pending; an unbind gives it up)",
  });
  const listed = await client.listBindings();
  assert.equal(listed.inSync, false);
  assert.match(listed.lastError, /iptables-restore/);
  assert.deepEqual(
    listed.bindings.map((b) => [b.eipAddr, b.pending]),
    [["192.168.18.200", true]],
    "the Failed binding is visible, and pending",
  );
  assert.deepEqual(
    (await store.load())?.map((b) => b.eip),
    ["192.168.18.200"],
    "and saved, as the reply says",
  );
  const applies = kernel.applies;
  await until("retried by itself", () => kernel.applies > applies);
  kernel.failWith = undefined;
  // Healed by the retry alone: no longer pending, without a new request.
  await until(
    "no longer pending",
    async () => (await client.listBindings()).bindings[0]?.pending === false,
  );
  assert.deepEqual(
    (await client.listBindings()).bindings.map((b) => [b.eipAddr, b.pending]),
    [["192.168.18.200", false]],
  );
  // Repeating the bind waits for a successful apply: the binding was kept as desired.
  const again = await client.eipOperate({
    action: "bind",
    eipAddr: "192.168.18.200",
    vmiAddr: "10.244.1.200",
  });
  assert.equal(again.result, "Succeed");
  assert.equal((await client.listBindings()).inSync, true);
  await client.eipOperate({ action: "unbind", eipAddr: "192.168.18.200", vmiAddr: "10.244.1.200" });
  client.close();
});

test("the health service answers SERVING once the agent says so", async () => {
  const { health, server: s } = buildGrpcServer(new AgentService({} as never));
  health.setStatus("", "SERVING");
  const port = await bindServer(s, "127.0.0.1:0", serverCredentials(undefined));
  const { protoPath } = await import("grpc-health-check");
  const def = protoLoader.loadSync(protoPath, { enums: String });
  const Health = (
    grpc.loadPackageDefinition(def) as unknown as {
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    }
  ).grpc.health.v1.Health;
  const c = new Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as grpc.Client &
    Record<string, (...a: unknown[]) => void>;
  const rsp = await new Promise<{ status: string }>((res, rej) =>
    c.Check?.({ service: "" }, (e: Error | null, r: { status: string }) => (e ? rej(e) : res(r))),
  );
  assert.equal(rsp.status, "SERVING");
  c.close();
  s.forceShutdown();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SETTINGS_MAX_CONCURRENT_STREAMS as the server at `port` announces it to a new client. */
async function advertisedStreams(port: number): Promise<number | undefined> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    await new Promise<void>((res, rej) => {
      session.once("remoteSettings", () => res());
      session.once("error", rej);
    });
    return session.remoteSettings.maxConcurrentStreams;
  } finally {
    session.destroy();
  }
}

async function until(what: string, fn: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await fn()) return;
    await sleep(10);
  }
  assert.fail(`never: ${what}`);
}

const bindReq = (n: number, vmi = n) => ({
  action: "bind",
  eipAddr: `192.168.18.${n}`,
  vmiAddr: `10.244.1.${vmi}`,
});

test("a failed save answers Failed, nothing was changed, and the bind never takes effect later", async () => {
  const client = new AgentClient(target);
  saver.failWith = new Error("ENOSPC: no space left on device");
  const rsp = await client.eipOperate(bindReq(210));
  assert.deepEqual(rsp, {
    result: "Failed",
    errPhase: 6,
    reason: "saving the bindings failed: ENOSPC: no space left on device; nothing was changed",
  });
  assert.deepEqual((await client.listBindings()).bindings, [], "not held, not even in memory");
  saver.failWith = undefined;
  // The loop retries (and so writes the kernel again), but what it writes has no 210.
  await until("in sync again", () => dataplane.inSync);
  assert.deepEqual((await client.listBindings()).bindings, []);
  assert.ok(!kernel.last?.ruleSources.includes("10.244.1.210"), "never reached the kernel");
  assert.deepEqual(await store.load(), []);
  // Asked again, it is a new bind like any other.
  assert.equal((await client.eipOperate(bindReq(210))).result, "Succeed");
  await client.eipOperate({ ...bindReq(210), action: "unbind" });
  client.close();
});

test("requests checked against a change whose save then fails change nothing either", async () => {
  let open!: () => void;
  saver.gate = new Promise((r) => (open = r));
  saver.failWith = new Error("EIO: i/o error");
  const writes = saver.writes;
  const first = service.eipOperate(bindReq(220));
  await until("the save started", () => saver.writes > writes);
  // While it is being saved: a second bind (shares the next apply) and one that conflicts
  // with the first (refused at once, against what is wanted).
  const second = service.eipOperate(bindReq(221));
  assert.deepEqual(await service.eipOperate(bindReq(222, 220)), {
    result: "Failed",
    errPhase: 0,
    reason: "VMI 10.244.1.220 already holds EIP 192.168.18.220",
  });
  saver.gate = undefined;
  open();
  for (const rsp of [await first, await second]) {
    assert.equal(rsp.result, "Failed");
    assert.equal(rsp.errPhase, 6);
    assert.match(rsp.reason, /^saving the bindings failed: EIO: i\/o error; nothing was changed$/);
  }
  saver.failWith = undefined;
  await until("in sync again", () => dataplane.inSync);
  assert.deepEqual(service.listBindings().bindings, []);
  assert.deepEqual(await store.load(), []);
  assert.equal((await service.eipOperate(bindReq(222, 220))).result, "Succeed", "220 is free");
  await service.eipOperate({ ...bindReq(222, 220), action: "unbind" });
});

test("a 1 MiB request is refused by the server with a short error and changes nothing", async () => {
  const client = new AgentClient(target);
  const writes = saver.writes;
  const err = await client
    .eipOperate({ action: "bind", eipAddr: "1".repeat(1 << 20), vmiAddr: "10.244.1.9" })
    .then(
      (rsp) => assert.fail(`answered ${rsp.result} with ${rsp.reason.length} characters`),
      (e: grpc.ServiceError) => e,
    );
  assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.ok(err.details.length < 200, err.details);
  assert.equal(saver.writes, writes);
  assert.deepEqual((await client.listBindings()).bindings, []);
  client.close();
});

test("refusal reasons and logged request fields are cut short", async () => {
  const lines: string[] = [];
  const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });
  const capturing = new AgentService({
    table: new BindingTable(),
    dataplane,
    policy: POLICY,
    logger,
    metrics: new AgentMetrics(),
  });
  const huge = "9".repeat(1 << 20);
  const rsps = [
    await capturing.eipOperate({ action: "bind", eipAddr: huge, vmiAddr: huge }),
    await capturing.eipOperate({ action: huge, eipAddr: huge, vmiAddr: huge }),
  ];
  for (const rsp of rsps) {
    assert.equal(rsp.result, "Failed");
    assert.ok(rsp.reason.length < SHOWN_MAX + 100, `a reason of ${rsp.reason.length}`);
    assert.match(rsp.reason, /\(1048576 characters\)/);
  }
  assert.equal(lines.length, 2);
  for (const line of lines) {
    assert.match(line, /"msg":"request refused"/);
    assert.ok(line.length < 8 * SHOWN_MAX + 400, `a log line of ${line.length}`);
  }
});

test("a long kernel error is cut short in the reply", async () => {
  kernel.failWith = new KernelError(Phase.Nat, "iptables-restore: ".padEnd(100_000, "x"));
  const rsp = await service.eipOperate(bindReq(230));
  assert.equal(rsp.errPhase, 2);
  assert.ok(rsp.reason.length < 1500, `a reason of ${rsp.reason.length}`);
  assert.match(rsp.reason, /^iptables-restore: x+\.\.\. \(cut\); the binding is saved/);
  kernel.failWith = undefined;
  await until("in sync again", () => dataplane.inSync);
  await service.eipOperate({ ...bindReq(230), action: "unbind" });
});

test("one connection gets at most STREAMS_MAX calls served at once; the rest wait", async () => {
  let inFlight = 0;
  let most = 0;
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const slow = new AgentService({
    bgp: {
      peers: async () => {
        most = Math.max(most, ++inFlight);
        await gate;
        inFlight--;
        return [];
      },
      announced: () => 0,
    },
  } as unknown as AgentServerOptions);
  const { server: s } = buildGrpcServer(slow);
  const port = await bindServer(s, "127.0.0.1:0", serverCredentials(undefined));
  const client = new AgentClient(`127.0.0.1:${port}`);
  const calls = Array.from({ length: STREAMS_MAX + 36 }, () => client.listBgpPeers(20_000));
  try {
    await until(`${STREAMS_MAX} calls in flight`, () => inFlight >= STREAMS_MAX);
    // The limit is the server's HTTP/2 setting, which every client must obey: read it as a
    // client sees it, rather than waiting for calls that must not arrive.
    assert.equal(await advertisedStreams(port), STREAMS_MAX);
    assert.equal(most, STREAMS_MAX);
    open();
    const rsps = await Promise.all(calls);
    assert.equal(rsps.length, STREAMS_MAX + 36, "the others were served after");
  } finally {
    open();
    await Promise.allSettled(calls);
    client.close();
    s.forceShutdown();
  }
});
