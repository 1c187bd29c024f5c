import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SET_EIP, SET_INTERNAL, SET_VMI, type IpsetSpec } from "../model/desired.js";
import { FakeRunner, failure } from "./fake-runner.js";
import { IpsetManager, normalizeMember, parseIpsetSave } from "./ipset.js";
import { KernelError, Phase } from "./manager.js";

// Captured with ipset v7.17 (`ipset save` in a throwaway netns).
const SAVED = `create k8s_internal_net hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x8576e8b4
add k8s_internal_net 10.244.0.0/16
add k8s_internal_net 10.244.7.0/24 nomatch
add k8s_internal_net 10.96.0.0/12
add k8s_internal_net 10.1.2.3
create kube-eip-vmi hash:ip family inet hashsize 4096 maxelem 1048576 bucketsize 12 initval 0xa8b07391
add kube-eip-vmi 10.0.0.11
add kube-eip-vmi 10.0.0.1
create kube-eip-eip hash:ip family inet hashsize 4096 maxelem 1048576 bucketsize 12 initval 0xe05bbae3
add kube-eip-eip 192.168.18.100
add kube-eip-eip 192.168.18.101
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x74c75f7f
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
create foreign-net hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xbd8425b1
add foreign-net 10.0.0.1
`;

const NAMES = new Set([SET_INTERNAL, SET_EIP, SET_VMI]);

function specs(internal: string[], eips: string[], vmis: string[]): IpsetSpec[] {
  return [
    { name: SET_INTERNAL, type: "hash:net", members: internal },
    { name: SET_EIP, type: "hash:ip", members: eips },
    { name: SET_VMI, type: "hash:ip", members: vmis },
  ];
}

/** The restore script from SAVED to EIPs .100 and .102, VMIs 10.0.0.1 and .12 (two tests). */
const TWO_FROM_SAVED = [
  "del k8s_internal_net 10.244.7.0/24 -exist",
  "del kube-eip-eip 192.168.18.101 -exist",
  "del kube-eip-vmi 10.0.0.11 -exist",
  "add kube-eip-eip 192.168.18.102 -exist",
  "add kube-eip-vmi 10.0.0.12 -exist",
  "",
].join("\n");

describe("parseIpsetSave", () => {
  it("keeps only the named sets and normalises their members", () => {
    const sets = parseIpsetSave(SAVED, NAMES);
    assert.deepEqual([...sets.keys()].sort(), [SET_INTERNAL, SET_EIP, SET_VMI].sort());
    const internal = sets.get(SET_INTERNAL);
    assert.equal(internal?.type, "hash:net");
    assert.equal(internal?.family, "inet");
    // A /32 member of a hash:net is printed bare; a nomatch entry is not a member.
    assert.deepEqual([...(internal?.members ?? [])].sort(), [
      "10.1.2.3/32",
      "10.244.0.0/16",
      "10.244.7.0/24 nomatch",
      "10.96.0.0/12",
    ]);
    assert.deepEqual([...(sets.get(SET_VMI)?.members ?? [])].sort(), ["10.0.0.1", "10.0.0.11"]);
  });

  it("ignores sets that are not named", () => {
    const sets = parseIpsetSave(SAVED, new Set(["foreign-net"]));
    assert.deepEqual([...sets.keys()], ["foreign-net"]);
    assert.deepEqual([...(sets.get("foreign-net")?.members ?? [])], ["10.0.0.1/32"]);
  });

  it("normalises members by set type", () => {
    assert.equal(normalizeMember("hash:net", "10.1.2.3"), "10.1.2.3/32");
    assert.equal(normalizeMember("hash:net", "10.1.2.3/32"), "10.1.2.3/32");
    assert.equal(normalizeMember("hash:net", "10.244.0.0/16"), "10.244.0.0/16");
    assert.equal(normalizeMember("hash:ip", "10.0.0.1"), "10.0.0.1");
    assert.equal(normalizeMember("hash:ip", "fe80::1"), "fe80::1");
  });
});

describe("IpsetManager", () => {
  it("creates missing sets with the large defaults in one restore", async () => {
    const runner = new FakeRunner().on("ipset save", "");
    const manager = new IpsetManager(runner);
    manager.setDesired(specs(["10.244.0.0/16"], ["192.168.18.100"], ["10.0.0.1"]));
    assert.equal(await manager.apply({ reread: false }), 6);
    assert.deepEqual(runner.lines(), ["ipset save", "ipset restore"]);
    assert.equal(
      runner.calls[1]?.input,
      [
        "create k8s_internal_net hash:net family inet hashsize 4096 maxelem 1048576 -exist",
        "create kube-eip-eip hash:ip family inet hashsize 4096 maxelem 1048576 -exist",
        "create kube-eip-vmi hash:ip family inet hashsize 4096 maxelem 1048576 -exist",
        "add k8s_internal_net 10.244.0.0/16 -exist",
        "add kube-eip-eip 192.168.18.100 -exist",
        "add kube-eip-vmi 10.0.0.1 -exist",
        "",
      ].join("\n"),
    );
  });

  it("writes only the difference, exactly (10.0.0.1 is not 10.0.0.11)", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired(
      specs(
        ["10.1.2.3/32", "10.244.0.0/16", "10.96.0.0/12"],
        ["192.168.18.100", "192.168.18.102"],
        ["10.0.0.1", "10.0.0.12"],
      ),
    );
    assert.equal(await manager.apply({ reread: false }), 5);
    assert.equal(runner.calls[1]?.input, TWO_FROM_SAVED);
  });

  it("trusts its belief afterwards: a second apply runs nothing", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired(specs(["10.244.0.0/16"], ["192.168.18.100"], ["10.0.0.1"]));
    await manager.apply({ reread: false });
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), []);
    // A new binding writes just its two members.
    manager.setDesired(
      specs(["10.244.0.0/16"], ["192.168.18.100", "192.168.18.9"], ["10.0.0.1", "10.0.0.9"]),
    );
    assert.equal(await manager.apply({ reread: false }), 2);
    assert.deepEqual(runner.lines(), ["ipset restore"]);
    assert.equal(
      runner.calls[0]?.input,
      "add kube-eip-eip 192.168.18.9 -exist\nadd kube-eip-vmi 10.0.0.9 -exist\n",
    );
  });

  it("re-reads when asked and repairs drift", async () => {
    let saved = SAVED.replace("add k8s_internal_net 10.244.7.0/24 nomatch\n", "");
    const runner = new FakeRunner().on("ipset save", () => saved);
    const manager = new IpsetManager(runner);
    manager.setDesired(
      specs(
        ["10.1.2.3/32", "10.244.0.0/16", "10.96.0.0/12"],
        ["192.168.18.100", "192.168.18.101"],
        ["10.0.0.1", "10.0.0.11"],
      ),
    );
    assert.equal(await manager.apply({ reread: false }), 0);
    saved = saved.replace("add kube-eip-vmi 10.0.0.11\n", "");
    runner.clear();
    assert.equal(await manager.apply({ reread: true }), 1);
    assert.deepEqual(runner.lines(), ["ipset save", "ipset restore"]);
    assert.equal(runner.calls[1]?.input, "add kube-eip-vmi 10.0.0.11 -exist\n");
  });

  it("never touches other sets, never destroys", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired(specs([], [], []));
    await manager.apply({ reread: false });
    const input = runner.calls[1]?.input ?? "";
    assert.doesNotMatch(input, /foreign-net|KUBE-CLUSTER-IP|destroy|flush/);
  });

  it("fails with Phase.Ipset and re-reads on the next apply", async () => {
    const runner = new FakeRunner()
      .on("ipset save", SAVED)
      .on("ipset restore", failure("ipset restore", "ipset v7.17: Error in line 1: boom\n"));
    const manager = new IpsetManager(runner);
    manager.setDesired(specs([], ["192.168.18.7"], []));
    await assert.rejects(manager.apply({ reread: false }), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.phase, Phase.Ipset);
      assert.match(err.message, /Error in line 1/);
      return true;
    });
    runner.on("ipset restore", "");
    runner.clear();
    await manager.apply({ reread: false });
    assert.deepEqual(runner.lines(), ["ipset save", "ipset restore"]);
  });

  it("refuses a set of another type", async () => {
    const runner = new FakeRunner().on(
      "ipset save",
      "create kube-eip-vmi hash:net family inet hashsize 1024 maxelem 65536\n",
    );
    const manager = new IpsetManager(runner);
    manager.setDesired([{ name: SET_VMI, type: "hash:ip", members: ["10.0.0.1"] }]);
    await assert.rejects(manager.apply({ reread: false }), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.phase, Phase.Ipset);
      assert.match(err.message, /hash:net/);
      return true;
    });
    assert.deepEqual(runner.lines(), ["ipset save"]);
  });

  it("refuses a member that would smuggle in another restore line", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired([
      { name: SET_VMI, type: "hash:ip", members: ["10.0.0.1\ndestroy foreign-net"] },
    ]);
    await assert.rejects(manager.apply({ reread: false }), {
      name: "KernelError",
      phase: Phase.Ipset,
    });
    assert.ok(!runner.lines().includes("ipset restore"));
  });

  it("reads again when a set it never read is desired", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired([{ name: SET_VMI, type: "hash:ip", members: ["10.0.0.1", "10.0.0.11"] }]);
    assert.equal(await manager.apply({ reread: false }), 0);
    manager.setDesired([{ name: "foreign-net", type: "hash:net", members: ["10.0.0.1/32"] }]);
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), ["ipset save", "ipset save"]);
  });
});

describe("IpsetManager read/adopt", () => {
  it("reads without touching the belief; adopt makes the next apply diff against it", async () => {
    let saved = SAVED;
    const runner = new FakeRunner().on("ipset save", () => saved);
    const manager = new IpsetManager(runner);
    manager.setDesired(
      specs(
        ["10.1.2.3/32", "10.244.0.0/16", "10.96.0.0/12"],
        ["192.168.18.100", "192.168.18.101"],
        ["10.0.0.1", "10.0.0.11"],
      ),
    );
    assert.equal(await manager.apply({ reread: false }), 1); // the nomatch entry goes
    saved = saved
      .replace("add k8s_internal_net 10.244.7.0/24 nomatch\n", "")
      .replace("add kube-eip-vmi 10.0.0.11\n", "");
    runner.clear();
    const snapshot = await manager.read();
    assert.deepEqual(runner.lines(), ["ipset save"]);
    assert.deepEqual([...snapshot.names].sort(), [SET_EIP, SET_INTERNAL, SET_VMI].sort());
    // The belief is untouched: the drift stays hidden until the snapshot is adopted.
    assert.equal(await manager.apply({ reread: false }), 0);
    manager.adopt(snapshot);
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 1);
    assert.deepEqual(runner.lines(), ["ipset restore"]);
    assert.equal(runner.calls[0]?.input, "add kube-eip-vmi 10.0.0.11 -exist\n");
    // The snapshot was not changed by the apply: adopting it again sees the drift again.
    manager.adopt(snapshot);
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 1);
    assert.equal(runner.calls[0]?.input, "add kube-eip-vmi 10.0.0.11 -exist\n");
  });

  it("lets a fresh manager write the difference from an adopted snapshot, without a read", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const desired = specs(
      ["10.1.2.3/32", "10.244.0.0/16", "10.96.0.0/12"],
      ["192.168.18.100", "192.168.18.102"],
      ["10.0.0.1", "10.0.0.12"],
    );
    const reader = new IpsetManager(runner);
    reader.setDesired(desired);
    const snapshot = await reader.read();
    const manager = new IpsetManager(runner);
    manager.setDesired(desired);
    manager.adopt(snapshot);
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 5);
    assert.deepEqual(runner.lines(), ["ipset restore"]);
    assert.equal(runner.calls[0]?.input, TWO_FROM_SAVED);
  });

  it("still reads a set the adopted snapshot did not cover", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired([{ name: SET_VMI, type: "hash:ip", members: ["10.0.0.1", "10.0.0.11"] }]);
    manager.adopt(await manager.read());
    manager.setDesired(specs([], [], []));
    runner.clear();
    await manager.apply({ reread: false });
    assert.deepEqual(runner.lines(), ["ipset save", "ipset restore"]);
  });

  it("fails a read with Phase.Ipset and keeps the belief", async () => {
    const runner = new FakeRunner().on("ipset save", SAVED);
    const manager = new IpsetManager(runner);
    manager.setDesired(specs(["10.244.0.0/16"], ["192.168.18.100"], ["10.0.0.1"]));
    await manager.apply({ reread: false });
    runner.on("ipset save", failure("ipset save", "ipset v7.17: Kernel error\n"));
    await assert.rejects(manager.read(), (err: unknown) => {
      assert.ok(err instanceof KernelError);
      assert.equal(err.phase, Phase.Ipset);
      assert.match(err.message, /^ipset: .*Kernel error/);
      return true;
    });
    runner.clear();
    assert.equal(await manager.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), []);
  });
});
