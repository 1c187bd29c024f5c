// Which iptables backend auto picks, against the real save tools in throwaway network
// namespaces (needs root): a host whose only firewall is a legacy FORWARD DROP policy.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { inspectIptablesBackends } from "./iptables-mode.js";
import { createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";

const notRoot = process.getuid?.() !== 0;

describe(
  "iptables backend detection in a network namespace",
  { skip: notRoot && "needs root" },
  () => {
    const host = new ExecRunner();
    let ns: NetnsRunner;

    before(async () => {
      ns = await createNetns(host);
    });

    after(async () => {
      if (ns !== undefined) await deleteNetns(host, ns.netns);
    });

    it("picks nft on a host with no firewall at all", async () => {
      assert.deepEqual(await inspectIptablesBackends(ns, "auto"), { mode: "nft", otherDrops: [] });
    });

    it("picks legacy on a host whose only firewall is `iptables-legacy -P FORWARD DROP`", async () => {
      await ns.run("iptables-legacy", ["-P", "FORWARD", "DROP"]);
      assert.deepEqual(await inspectIptablesBackends(ns, "auto"), {
        mode: "legacy",
        otherDrops: [],
      });
    });

    it("names what the other backend holds that would drop EIP traffic", async () => {
      assert.deepEqual(await inspectIptablesBackends(ns, "nft"), {
        mode: "nft",
        otherDrops: ["filter FORWARD policy DROP"],
      });
    });
  },
);
