// SysctlManager against the real sysctl, inside a throwaway network namespace (needs root):
// the settings it writes are the namespace's, never the host's.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { gatewaySysctls, type PlanConfig } from "../model/plan.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { addStandInDevice, createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";
import { SysctlManager, SysctlWriter } from "./sysctl.js";

const notRoot = process.getuid?.() !== 0;

const CONFIG: PlanConfig = {
  ...TEST_PLAN_CONFIG,
  internalNets: ["10.244.0.0/16"],
  gatewayDev: "eth1.5",
  arpPoisoning: true,
};

describe("SysctlManager in a network namespace", { skip: notRoot ? "needs root" : false }, () => {
  const host = new ExecRunner();
  let ns: NetnsRunner;
  let hostValues: string;

  const values = async (runner: { run: ExecRunner["run"] }) =>
    (
      await runner.run("sysctl", [
        "-n",
        "net/ipv4/conf/eth1.5/arp_ignore",
        "net/ipv4/neigh/eth1.5/proxy_delay",
      ])
    ).stdout;

  before(async () => {
    ns = await createNetns(host);
    // A device name with a dot (a VLAN's, say): the keys must be in the slash form.
    await addStandInDevice(host, ns.netns, "eth1.5");
    hostValues = (await host.run("sysctl", ["-n", "net/ipv4/conf/all/arp_ignore"])).stdout;
  });

  after(async () => {
    if (ns !== undefined) await deleteNetns(host, ns.netns);
  });

  it("holds the gateway device's arp_ignore and proxy_delay, and repairs drift", async () => {
    assert.equal(await values(ns), "0\n80\n");
    const m = new SysctlManager(new SysctlWriter(ns));
    m.setDesired(gatewaySysctls(CONFIG));
    assert.equal(await m.apply({ reread: false }), 2);
    assert.equal(await values(ns), "1\n0\n");
    assert.equal(await m.apply({ reread: true }), 0);
    await ns.run("sysctl", ["-qw", "net/ipv4/neigh/eth1.5/proxy_delay=80"]);
    assert.equal(await m.apply({ reread: true }), 1);
    assert.equal(await values(ns), "1\n0\n");
    assert.equal(
      (await host.run("sysctl", ["-n", "net/ipv4/conf/all/arp_ignore"])).stdout,
      hostValues,
      "the host's settings are untouched",
    );
  });
});
