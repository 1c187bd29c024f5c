// Ownership by mark against the real kernel (needs root): a keepalived-style VIP and a
// foreign proxy entry inside the EIP network survive resyncs, a restart with or without
// saved bindings, and the unbind of a neighbouring EIP; a binding of that address never
// takes it over.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { RouteManager, routeDesired } from "./iproute.js";
import { KernelError, Phase } from "./manager.js";
import { addStandInDevice, createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";
import { TEST_PLAN_CONFIG, TEST_ROUTE_OPTIONS } from "../model/test-plan-config.js";

const notRoot = process.getuid?.() !== 0;

const CONFIG: PlanConfig = { ...TEST_PLAN_CONFIG, internalNets: ["10.244.0.0/16"] };
const OPTIONS = TEST_ROUTE_OPTIONS;
const OURS: Binding = { eip: "192.168.18.100", vmi: "10.244.1.10" };
const NEIGHBOUR: Binding = { eip: "192.168.18.101", vmi: "10.244.1.11" };
const VIP = "192.168.18.150";
const PROXY = "192.168.18.151";

for (const arpPoisoning of [false, true]) {
  describe(
    `RouteManager and foreign state in the EIP network (arp poisoning ${arpPoisoning})`,
    { skip: notRoot ? "needs root" : false },
    () => {
      const host = new ExecRunner();
      const config = { ...CONFIG, arpPoisoning };
      let ns: NetnsRunner;

      before(async () => {
        ns = await createNetns(host);
        await addStandInDevice(host, ns.netns, "eth1");
        await addStandInDevice(host, ns.netns, "cni0");
        await ns.run("ip", ["addr", "add", "192.168.18.11/24", "dev", "eth1"]);
        await ns.run("ip", ["addr", "add", "10.244.1.1/24", "dev", "cni0"]);
        // keepalived's VIP and someone's proxy ARP answer, both inside --eip-cidr.
        await ns.run("ip", ["addr", "add", `${VIP}/32`, "dev", "eth1"]);
        await ns.run("ip", ["neigh", "add", "proxy", PROXY, "dev", "eth1"]);
      });

      after(async () => {
        if (ns !== undefined) await deleteNetns(host, ns.netns);
      });

      async function foreignState(): Promise<{ vip: boolean; proxy: boolean }> {
        const addr = await ns.run("ip", ["-4", "addr", "show", "dev", "eth1"]);
        const neigh = await ns.run("ip", ["neigh", "show", "proxy", "dev", "eth1"]);
        return {
          vip: addr.stdout.includes(`inet ${VIP}/32 `),
          proxy: neigh.stdout.split("\n").some((l) => l.trim() === `${PROXY} proxy`),
        };
      }

      function manager(bindings: Binding[]): RouteManager {
        const m = new RouteManager(ns, OPTIONS);
        m.setDesired(routeDesired(plan(config, bindings)));
        return m;
      }

      it("keeps them through binds, resyncs, restarts, an empty table and unbinds", async () => {
        const m = manager([OURS, NEIGHBOUR]);
        await m.apply({ reread: true });
        for (let i = 0; i < 3; i++) await m.apply({ reread: true });
        assert.deepEqual(await foreignState(), { vip: true, proxy: true });
        // A restart: a fresh manager, the same bindings.
        await manager([OURS, NEIGHBOUR]).apply({ reread: true });
        // The neighbour is unbound.
        const after = manager([OURS, NEIGHBOUR]);
        await after.apply({ reread: true });
        after.setDesired(routeDesired(plan(config, [OURS])));
        await after.apply({ reread: true });
        assert.deepEqual(await foreignState(), { vip: true, proxy: true });
        // Nothing bound at all (a start with a wiped state): ours go, the foreign stay.
        await manager([]).apply({ reread: true });
        assert.deepEqual(await foreignState(), { vip: true, proxy: true });
        const addr = await ns.run("ip", ["-4", "-o", "addr", "show", "dev", "eth1"]);
        assert.doesNotMatch(addr.stdout, /192\.168\.18\.10[01]\//, "ours were removed");
        const neigh = await ns.run("ip", ["neigh", "show", "proxy", "dev", "eth1"]);
        assert.doesNotMatch(neigh.stdout, /192\.168\.18\.10[01]/, "ours were removed");
      });

      it("never takes over the foreign address when it is bound", async () => {
        const m = manager([OURS]);
        await m.apply({ reread: true });
        const before = await ns.run("ip", ["-json", "-4", "addr", "show"]);
        const beforeNeigh = await ns.run("ip", ["-json", "neigh", "show", "proxy"]);
        const held = arpPoisoning ? PROXY : VIP;
        m.setDesired(routeDesired(plan(config, [OURS, { eip: held, vmi: "10.244.1.20" }])));
        await assert.rejects(
          m.apply({ reread: true }),
          (err: unknown) => err instanceof KernelError && err.phase === Phase.Address,
        );
        m.setDesired(routeDesired(plan(config, [OURS])));
        await m.apply({ reread: true });
        assert.equal((await ns.run("ip", ["-json", "-4", "addr", "show"])).stdout, before.stdout);
        const neigh = await ns.run("ip", ["-json", "neigh", "show", "proxy"]);
        assert.equal(neigh.stdout, beforeNeigh.stdout);
        const routes = await ns.run("ip", ["route", "show", `${held}/32`]);
        assert.equal(routes.stdout.trim(), "", "no host route to it either");
        assert.deepEqual(await foreignState(), { vip: true, proxy: true });
      });
    },
  );
}
