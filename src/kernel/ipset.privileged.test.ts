// IpsetManager against the real ipset, inside a throwaway network namespace (needs root).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { SET_EIP, SET_INTERNAL, SET_VMI } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { TEST_BINDINGS, TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { RecordingRunner } from "./fake-runner.js";
import { IpsetManager } from "./ipset.js";
import { createNetns, deleteNetns, type NetnsRunner } from "./netns-runner.js";
import { ExecRunner } from "./runner.js";

const notRoot = process.getuid?.() !== 0;

const CONFIG: PlanConfig = {
  ...TEST_PLAN_CONFIG,
  internalNets: ["10.244.0.0/16", "10.96.0.0/12", "10.1.2.3/32"],
};

const PAIR = TEST_BINDINGS;

describe("IpsetManager in a network namespace", { skip: notRoot ? "needs root" : false }, () => {
  const host = new ExecRunner();
  let ns: NetnsRunner;
  let runner: RecordingRunner;

  before(async () => {
    ns = await createNetns(host);
    runner = new RecordingRunner(ns);
    // Foreign state: someone else's set, and our internal-net set already created by the
    // previous version with its own (small) defaults.
    await ns.run("ipset", ["create", "foreign-set", "hash:ip"]);
    await ns.run("ipset", ["add", "foreign-set", "10.0.0.1"]);
    await ns.run("ipset", ["create", SET_INTERNAL, "hash:net", "family", "inet"]);
    await ns.run("ipset", ["add", SET_INTERNAL, "10.244.0.0/16"]);
    await ns.run("ipset", ["add", SET_INTERNAL, "172.31.0.0/16"]);
  });

  after(async () => {
    if (ns !== undefined) await deleteNetns(host, ns.netns);
  });

  /** The `add` lines of a set, as `ipset save` prints them, sorted. */
  async function members(name: string): Promise<string[]> {
    const { stdout } = await ns.run("ipset", ["save", name]);
    return stdout
      .split("\n")
      .filter((line) => line.startsWith("add "))
      .sort();
  }

  async function header(name: string): Promise<string> {
    const { stdout } = await ns.run("ipset", ["list", "-t", name]);
    return stdout.split("\n").find((line) => line.startsWith("Header:")) ?? "";
  }

  const manager = () => new IpsetManager(runner);
  let m: IpsetManager;

  it("creates what is missing and holds exactly the desired members", async () => {
    m = manager();
    m.setDesired(plan(CONFIG, PAIR).ipsets);
    runner.clear();
    assert.ok((await m.apply({ reread: false })) > 0);
    assert.deepEqual(runner.lines(), ["ipset save", "ipset restore"]);
    assert.deepEqual(await members(SET_INTERNAL), [
      // ipset prints a /32 member of a hash:net bare.
      `add ${SET_INTERNAL} 10.1.2.3`,
      `add ${SET_INTERNAL} 10.244.0.0/16`,
      `add ${SET_INTERNAL} 10.96.0.0/12`,
    ]);
    assert.deepEqual(await members(SET_EIP), [
      `add ${SET_EIP} 192.168.18.100`,
      `add ${SET_EIP} 192.168.18.101`,
    ]);
    assert.deepEqual(await members(SET_VMI), [
      `add ${SET_VMI} 10.0.0.1`,
      `add ${SET_VMI} 10.0.0.11`,
    ]);
    assert.match(await header(SET_VMI), /hashsize 4096 maxelem 1048576/);
    // The existing set was not re-created.
    assert.match(await header(SET_INTERNAL), /hashsize 1024 maxelem 65536/);
    assert.deepEqual(await members("foreign-set"), ["add foreign-set 10.0.0.1"]);
  });

  it("writes nothing the second time, with or without a re-read", async () => {
    runner.clear();
    assert.equal(await m.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), []);
    assert.equal(await m.apply({ reread: true }), 0);
    assert.equal(await manager().apply({ reread: true }), 0);
  });

  it("unbinding 10.0.0.1 removes exactly its members (not 10.0.0.11's)", async () => {
    m.setDesired(plan(CONFIG, PAIR.slice(1)).ipsets);
    runner.clear();
    assert.equal(await m.apply({ reread: false }), 2);
    assert.equal(
      runner.calls[0]?.input,
      `del ${SET_EIP} 192.168.18.100 -exist\ndel ${SET_VMI} 10.0.0.1 -exist\n`,
    );
    assert.deepEqual(await members(SET_EIP), [`add ${SET_EIP} 192.168.18.101`]);
    assert.deepEqual(await members(SET_VMI), [`add ${SET_VMI} 10.0.0.11`]);
    assert.deepEqual(await members("foreign-set"), ["add foreign-set 10.0.0.1"]);
  });

  it("repairs drift on a re-read", async () => {
    await ns.run("ipset", ["del", SET_VMI, "10.0.0.11"]);
    await ns.run("ipset", ["add", SET_EIP, "192.168.18.200"]);
    await ns.run("ipset", ["add", SET_INTERNAL, "10.244.7.0/24", "nomatch"]);
    assert.equal(await m.apply({ reread: false }), 0, "the belief hides drift until a re-read");
    assert.equal(await m.apply({ reread: true }), 3);
    assert.deepEqual(await members(SET_VMI), [`add ${SET_VMI} 10.0.0.11`]);
    assert.deepEqual(await members(SET_EIP), [`add ${SET_EIP} 192.168.18.101`]);
    assert.deepEqual(await members(SET_INTERNAL), [
      `add ${SET_INTERNAL} 10.1.2.3`,
      `add ${SET_INTERNAL} 10.244.0.0/16`,
      `add ${SET_INTERNAL} 10.96.0.0/12`,
    ]);
  });

  it("re-creates a set destroyed behind its back", async () => {
    await ns.run("ipset", ["destroy", SET_EIP]);
    assert.equal(await m.apply({ reread: true }), 2);
    assert.deepEqual(await members(SET_EIP), [`add ${SET_EIP} 192.168.18.101`]);
  });
});
