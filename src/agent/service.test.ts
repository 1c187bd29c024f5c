// The agent's request path end to end over real gRPC on localhost, with recording fake
// subsystems in place of the kernel (the kernel path is tested for real in the lab).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { AgentClient } from "../common/agent-api.js";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { KernelError, Phase } from "../kernel/manager.js";
import { runEipctl } from "../cli/eipctl.js";
import { BindingTable } from "./binding-table.js";
import { Dataplane, type Subsystem } from "./dataplane.js";
import { AgentMetrics } from "./metrics.js";
import type { DesiredState } from "./plan.js";
import { AgentService, bindServer, buildGrpcServer, serverCredentials } from "./server.js";
import { BindingStore } from "./store.js";

const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);

/**
 * Lets the event loop run until cond holds. No wall-clock figure: the test's timeout bounds
 * it, and its signal ends the wait when the test times out.
 */
async function until(cond: () => boolean, signal: AbortSignal): Promise<void> {
  while (!cond()) {
    signal.throwIfAborted();
    await new Promise((r) => setImmediate(r));
  }
}

class FakeKernel implements Subsystem {
  readonly name = "fake";
  applies = 0;
  failWith: KernelError | undefined;
  last: DesiredState | undefined;
  /** While set, every apply waits for it: the test decides when the kernel answers. */
  gate: Promise<void> | undefined;
  async sync(desired: DesiredState): Promise<number> {
    this.applies++;
    await (this.gate ?? Promise.resolve());
    if (this.failWith) throw this.failWith;
    this.last = desired;
    return 1;
  }
  async read(): Promise<unknown> {
    return "snapshot";
  }
  adopt(): void {}
}

let dir: string;
let server: grpc.Server;
let target: string;
let kernel: FakeKernel;
let store: BindingStore;
let table: BindingTable;
let dataplane: Dataplane;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "keip-svc-"));
  kernel = new FakeKernel();
  store = new BindingStore(dir);
  table = new BindingTable();
  const logger = pino({ level: "silent" });
  const metrics = new AgentMetrics();
  dataplane = new Dataplane({
    table,
    store,
    config: {
      internalNets: ["10.244.0.0/16"],
      gatewayIp: "192.168.18.1",
      gatewayDev: "eth1",
      eipCidr: "192.168.18.0/24",
      arpPoisoning: false,
      cniDev: "cni0",
    },
    subsystems: [kernel],
    logger,
    metrics,
    retryBaseMs: 10,
    retryMaxMs: 20,
  });
  const service = new AgentService({
    table,
    dataplane,
    policy: { eipCidr: net("192.168.18.0/24"), internalNets: [net("10.244.0.0/16")] },
    logger,
    metrics,
  });
  ({ server } = buildGrpcServer(service));
  const port = await bindServer(server, "127.0.0.1:0", serverCredentials(undefined));
  target = `127.0.0.1:${port}`;
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
  assert.match(r.out, /^EIP\s+VMI\s+SINCE\n192\.168\.18\.100\s+10\.244\.1\.10\s+\d{4}-/);
  r = await ctl("--action", "list", "--output", "json");
  const listed = JSON.parse(r.out) as {
    bindings: { eipAddr: string; vmiAddr: string }[];
    inSync: boolean;
  };
  assert.deepEqual(
    listed.bindings.map((b) => [b.eipAddr, b.vmiAddr]),
    [["192.168.18.100", "10.244.1.10"]],
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

test("concurrent requests share one apply", { timeout: 10_000 }, async (t) => {
  const before = kernel.applies;
  const client = new AgentClient(target);
  // The kernel answers only once all 32 binds are in the table: the first apply is under
  // way with what had arrived, and every later one must share the one apply after it.
  let open = () => {};
  kernel.gate = new Promise<void>((r) => (open = r));
  const replies = Promise.all(
    Array.from({ length: 32 }, (_, i) =>
      client.eipOperate({
        action: "bind",
        eipAddr: `192.168.18.${150 + i}`,
        vmiAddr: `10.244.2.${i + 10}`,
      }),
    ),
  );
  await until(() => table.size === 32, t.signal);
  kernel.gate = undefined;
  open();
  const rsps = await replies;
  assert.ok(rsps.every((r) => r.result === "Succeed"));
  assert.equal(kernel.applies - before, 2, "one apply under way, one for all that came during it");
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

test(
  "a kernel failure answers Failed with its phase, and the loop retries until it heals",
  { timeout: 10_000 },
  async (t) => {
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
      reason: "iptables-restore: line 3 failed",
    });
    const listed = await client.listBindings();
    assert.equal(listed.inSync, false);
    assert.match(listed.lastError, /iptables-restore/);
    // Retried by itself: nobody asks, yet another apply runs (the test's timeout bounds it).
    const applies = kernel.applies;
    await until(() => kernel.applies > applies, t.signal);
    kernel.failWith = undefined;
    // Repeating the bind waits for a successful apply: the binding was kept as desired.
    const again = await client.eipOperate({
      action: "bind",
      eipAddr: "192.168.18.200",
      vmiAddr: "10.244.1.200",
    });
    assert.equal(again.result, "Succeed");
    assert.equal((await client.listBindings()).inSync, true);
    await client.eipOperate({
      action: "unbind",
      eipAddr: "192.168.18.200",
      vmiAddr: "10.244.1.200",
    });
    client.close();
  },
);

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
