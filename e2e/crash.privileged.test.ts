// A crash at any instant loses nothing acknowledged, and a graceful stop leaves everything
// in place. On both iptables backends (node 1 legacy, node 2 nft), several rounds: a burst
// of concurrent binds and unbinds, SIGKILL at a different instant each round, then the
// saved state and the kernel are checked in both directions (every acknowledged bind there,
// every acknowledged unbind gone), before the restart and after it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "../src/lab/lab.js";
import { type NodeAgent, kernelSnapshot, labDataplane, startAgent } from "../src/lab/agents.js";
import { BindingStore } from "../src/agent/store.js";
import { NEEDS_ROOT, eventually, sleep } from "./harness.js";

/** The EIPs of the bursts; each loop owns every LOOPS-th one, so its ops on one are in order. */
const POOL = Array.from({ length: 40 }, (_, i) => `192.168.18.${10 + i}`);
const LOOPS = 8;
/** Acknowledged replies before the kill, one figure a round: early, mid-burst, late. */
const KILL_AFTER = [1, 12, 40, 90];

type Snapshot = Record<string, string>;

/** Each section's lines, sorted: the kernel's order within a section is not ours to fix. */
function lines(snap: Snapshot): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(snap).map(([k, v]) => [k, v.split("\n").filter(Boolean).sort()]),
  );
}

/** `addr` as a whole address in a line (192.168.18.1 never matches 192.168.18.10). */
function addressPattern(addr: string): RegExp {
  return new RegExp(`(?<![\\d.])${addr.replace(/\./g, "\\.")}(?![\\d])`, "g");
}

/**
 * The kernel state of a node holding `held`, derived from two snapshots the agent made:
 * `idle` (nothing bound) and `one` (only `template` bound). Each binding adds the lines
 * `one` adds to `idle`, with its own addresses; on the nftables dataplane, the first also
 * adds our table's skeleton (its chains and the internal nets), there while any binding is.
 */
class KernelModel {
  private readonly added: Record<string, string[]> = {};
  /** What the first binding adds that names no binding: only our nftables table's lines. */
  private readonly shared: string[] = [];

  constructor(
    private readonly idle: Snapshot,
    one: Snapshot,
    private readonly template: { eip: string; vmi: string },
  ) {
    const base = lines(idle);
    for (const [section, all] of Object.entries(lines(one))) {
      const rest = [...(base[section] ?? [])];
      const extra: string[] = [];
      for (const l of all) {
        const i = rest.indexOf(l);
        if (i >= 0) rest.splice(i, 1);
        else extra.push(l);
      }
      assert.deepEqual(rest, [], `a bind only adds to ${section}`);
      const names = (l: string) =>
        addressPattern(template.eip).test(l) || addressPattern(template.vmi).test(l);
      for (const l of extra.filter((l) => !names(l))) {
        assert.ok(
          section === "nftables",
          `${section}: a binding's line names its EIP or VMI: ${l}`,
        );
        this.shared.push(l);
      }
      this.added[section] = extra.filter(names);
    }
  }

  expected(held: ReadonlyMap<string, string>): Record<string, string[]> {
    const want = lines(this.idle);
    if (held.size > 0 && this.shared.length > 0) (want["nftables"] ??= []).push(...this.shared);
    for (const [eip, vmi] of held) {
      for (const [section, extra] of Object.entries(this.added)) {
        for (const l of extra) {
          (want[section] ??= []).push(
            l
              .replace(addressPattern(this.template.eip), eip)
              .replace(addressPattern(this.template.vmi), vmi),
          );
        }
      }
    }
    for (const section of Object.values(want)) section.sort();
    return want;
  }

  /** The lines of `snap` that name `eip` or `vmi`, and those a binding of them would add. */
  linesOf(snap: Snapshot, eip: string, vmi: string): { got: string[]; bound: string[] } {
    const names = (l: string) => addressPattern(eip).test(l) || addressPattern(vmi).test(l);
    const got = Object.values(lines(snap)).flat().filter(names).sort();
    const bound = Object.values(this.expected(new Map([[eip, vmi]])))
      .flat()
      .filter(names)
      .sort();
    return { got, bound };
  }
}

/** A small deterministic generator, so a failing round can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface RoundResult {
  /** Per EIP: the state its last acknowledged op left, and whether an op was in flight after it. */
  readonly last: Map<string, { bound: boolean; inFlight?: "bind" | "unbind" }>;
  readonly acknowledged: number;
  readonly failedBeforeKill: string[];
  readonly lostAfterKill: number;
}

describe("crash consistency and graceful stop", { skip: NEEDS_ROOT }, () => {
  let lab: Lab;
  const agents = new Map<number, NodeAgent>();
  /** The VMI of an EIP of the bursts: 10.244.<node>.150-189 (the lab's VMIs start at .10). */
  const vmiOf = (node: number, eip: string) => `10.244.${node}.${Number(eip.split(".")[3]) + 140}`;

  before(async () => {
    lab = await Lab.up({ nodes: 2, iptablesModes: "mixed", removeOnExit: true });
  });

  after(async () => {
    for (const a of agents.values()) await a.stop().catch(() => {});
    await lab?.down();
  });

  const start = async (node: number, name?: string) => {
    const a = await startAgent(lab, node, name ? { name } : {});
    agents.set(node, a);
    assert.ok(
      await eventually(async () => (await a.client.listBindings()).inSync, 20_000),
      "the agent is in sync",
    );
    return a;
  };

  /** One burst of mixed binds and unbinds, SIGKILL after `killAfter` acknowledged replies. */
  async function burst(
    agent: NodeAgent,
    state: Map<string, string>,
    killAfter: number,
    random: () => number,
  ): Promise<RoundResult> {
    const last = new Map(POOL.map((eip) => [eip, { bound: state.has(eip) }] as const)) as Map<
      string,
      { bound: boolean; inFlight?: "bind" | "unbind" }
    >;
    let acknowledged = 0;
    let killed = false;
    let lostAfterKill = 0;
    const failedBeforeKill: string[] = [];
    const loops = Array.from({ length: LOOPS }, async (_, loop) => {
      const mine = POOL.filter((_, i) => i % LOOPS === loop);
      while (!killed) {
        const eip = mine[Math.floor(random() * mine.length)] ?? "";
        const action = random() < 0.5 ? "bind" : "unbind";
        const entry = last.get(eip) ?? { bound: false };
        entry.inFlight = action;
        last.set(eip, entry);
        const rsp = await agent.client
          .eipOperate({ action, eipAddr: eip, vmiAddr: vmiOf(agent.node, eip) }, 10_000)
          .then(
            (r) => r,
            (err: Error) => err,
          );
        if (rsp instanceof Error || rsp.result !== "Succeed") {
          const what = `${action} ${eip}: ${rsp instanceof Error ? rsp.message : rsp.reason}`;
          if (killed) lostAfterKill++;
          else failedBeforeKill.push(what);
          return; // this EIP's op stays in flight: either outcome is allowed
        }
        last.set(eip, { bound: action === "bind" });
        acknowledged++;
      }
    });
    while (acknowledged < killAfter) await sleep(1);
    await sleep(random() * 15); // not always right after a reply
    killed = true;
    await agent.kill();
    await Promise.all(loops);
    return { last, acknowledged, failedBeforeKill, lostAfterKill };
  }

  /** What the agent saved is what was acknowledged, whatever was in flight. */
  function checkHeld(
    held: ReadonlyMap<string, string>,
    r: RoundResult,
    node: number,
    where: string,
  ): void {
    for (const [eip, vmi] of held) {
      assert.ok(r.last.has(eip), `${where}: ${eip} was never asked for`);
      assert.equal(vmi, vmiOf(node, eip), `${where}: ${eip}'s VMI`);
    }
    for (const [eip, { bound, inFlight }] of r.last) {
      if (inFlight !== undefined) continue;
      assert.equal(
        held.has(eip),
        bound,
        `${where}: acknowledged ${bound ? "bind" : "unbind"} ${eip}`,
      );
    }
  }

  for (const node of [1, 2]) {
    test(`node ${node}: SIGKILL at ${KILL_AFTER.length} instants of a burst of binds and unbinds loses nothing acknowledged`, async (t) => {
      const mode = lab.node(node).iptablesMode;
      assert.equal(mode, node === 1 ? "legacy" : "nft");
      let agent = await start(node);
      const idle = await kernelSnapshot(lab, node);
      const template = { eip: "192.168.18.60", vmi: vmiOf(node, "192.168.18.60") };
      const bind = await agent.client.eipOperate({
        action: "bind",
        eipAddr: template.eip,
        vmiAddr: template.vmi,
      });
      assert.equal(bind.result, "Succeed", bind.reason);
      const model = new KernelModel(idle, await kernelSnapshot(lab, node), template);
      const unbind = await agent.client.eipOperate({
        action: "unbind",
        eipAddr: template.eip,
        vmiAddr: template.vmi,
      });
      assert.equal(unbind.result, "Succeed", unbind.reason);
      assert.deepEqual(
        lines(await kernelSnapshot(lab, node)),
        lines(idle),
        "an unbind takes back all a bind made",
      );

      let held = new Map<string, string>();
      const random = prng(node * 1000 + 7);
      for (const [round, killAfter] of KILL_AFTER.entries()) {
        const where: string = `${labDataplane()} on iptables-${mode} round ${round + 1} (kill after ${killAfter})`;
        const r = await burst(agent, held, killAfter, random);
        const inFlight = [...r.last.values()].filter((e) => e.inFlight).length;
        t.diagnostic(
          `${where}: ${r.acknowledged} acknowledged, ${inFlight} in flight at the kill, ${r.lostAfterKill} replies lost to it, ${r.failedBeforeKill.length} failed before it${r.failedBeforeKill.length ? `: ${r.failedBeforeKill.join("; ")}` : ""}`,
        );
        assert.deepEqual(r.failedBeforeKill, [], `${where}: no request failed before the kill`);

        // The saved state, read as the next start reads it.
        const saved = new Map(
          ((await new BindingStore(agent.stateDir).load()) ?? []).map((b) => [b.eip, b.vmi]),
        );
        checkHeld(saved, r, node, `${where}, saved state`);
        // The kernel as the dead agent left it: each acknowledged binding whole, each
        // acknowledged unbind gone without a trace.
        const dead = await kernelSnapshot(lab, node);
        for (const [eip, { bound, inFlight: f }] of r.last) {
          if (f !== undefined) continue;
          const { got, bound: want } = model.linesOf(dead, eip, vmiOf(node, eip));
          assert.deepEqual(got, bound ? want : [], `${where}, kernel after the kill: ${eip}`);
        }

        agent = await start(node, `agent-node${node}-round${round + 1}`);
        const listed = new Map(
          (await agent.client.listBindings()).bindings.map((b) => [b.eipAddr, b.vmiAddr]),
        );
        assert.deepEqual(listed, saved, `${where}: the restarted agent holds what was saved`);
        assert.deepEqual(
          lines(await kernelSnapshot(lab, node)),
          model.expected(listed),
          `${where}: the whole kernel state is that of the bindings held`,
        );
        held = listed;
      }
    });
  }

  test("a graceful stop (SIGTERM) leaves the kernel and the traffic in place, and so does the restart", async () => {
    const node = 1;
    const agent = agents.get(node) ?? (await start(node));
    const vmi = (await lab.addVmi("steady", node)).address;
    const eip = "192.168.18.150";
    const bind = await agent.client.eipOperate({ action: "bind", eipAddr: eip, vmiAddr: vmi });
    assert.equal(bind.result, "Succeed", bind.reason);
    const outside = lab.describe().outside.namespace;
    assert.ok((await lab.ping(outside, eip, { count: 3, intervalSec: 0.2 })).received === 3);
    const before = await kernelSnapshot(lab, node);

    // 100 pings 50 ms apart (5 s) across the stop, the time without an agent, and the restart.
    const ping = lab.ping(outside, eip, { count: 100, intervalSec: 0.05 });
    let pingDone = false;
    void ping.then(() => (pingDone = true));
    await sleep(500);
    agent.client.close();
    const exit = await agent.proc.stop();
    assert.deepEqual(exit.code, 0, "the agent exits by itself, cleanly, on SIGTERM");
    assert.deepEqual(
      await kernelSnapshot(lab, node),
      before,
      "the stopped agent left the kernel as it was",
    );
    await sleep(500);
    const restarted = await start(node, `agent-node${node}-after-sigterm`);
    assert.equal(pingDone, false, "the ping outlasted the stop and the restart");
    const result = await ping;
    assert.equal(
      result.received,
      result.sent,
      `${result.sent - result.received} of ${result.sent} pings lost`,
    );
    assert.equal(result.sent, 100);
    assert.deepEqual(await kernelSnapshot(lab, node), before, "the restart changed nothing");
    assert.deepEqual(
      (await restarted.client.listBindings()).bindings
        .map((b) => [b.eipAddr, b.vmiAddr])
        .filter(([e]) => e === eip),
      [[eip, vmi]],
    );
  });
});
