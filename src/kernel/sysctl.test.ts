import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { FakeRunner, failure } from "./fake-runner.js";
import { Phase } from "./manager.js";
import { SysctlManager, SysctlWriter } from "./sysctl.js";

const ARP_IGNORE = "net/ipv4/conf/eth1/arp_ignore";
const PROXY_DELAY = "net/ipv4/neigh/eth1/proxy_delay";
const READ = `sysctl -n ${ARP_IGNORE} ${PROXY_DELAY}`;
const BOTH = [
  { key: ARP_IGNORE, value: "1" },
  { key: PROXY_DELAY, value: "0" },
];

describe("SysctlManager", () => {
  it("reads the named settings in one call and writes those that differ in one call", async () => {
    const runner = new FakeRunner().on(READ, "1\n80\n");
    const m = new SysctlManager(new SysctlWriter(runner));
    m.setDesired(BOTH);
    assert.equal(await m.apply({ reread: false }), 1);
    assert.deepEqual(runner.lines(), [READ, `sysctl -w ${PROXY_DELAY}=0`]);
    runner.clear();
    assert.equal(await m.apply({ reread: false }), 0, "the belief holds");
    assert.deepEqual(runner.lines(), []);
    // Drift, seen by a re-read.
    runner.on(READ, "0\n0\n");
    assert.equal(await m.apply({ reread: true }), 1);
    assert.deepEqual(runner.lines(), [READ, `sysctl -w ${ARP_IGNORE}=1`]);
  });

  it("reads again when a setting it never read is named", async () => {
    const runner = new FakeRunner().on(`sysctl -n ${ARP_IGNORE}`, "1\n").on(READ, "1\n0\n");
    const m = new SysctlManager(new SysctlWriter(runner));
    m.setDesired(BOTH.slice(0, 1));
    assert.equal(await m.apply({ reread: false }), 0);
    m.setDesired(BOTH);
    assert.equal(await m.apply({ reread: false }), 0);
    assert.deepEqual(runner.lines(), [`sysctl -n ${ARP_IGNORE}`, READ]);
  });

  it("fails with Phase.Address, forgets its belief, and refuses bad keys before running", async () => {
    const runner = new FakeRunner()
      .on(READ, "0\n80\n")
      .on(`sysctl -w ${ARP_IGNORE}=1 ${PROXY_DELAY}=0`, failure("sysctl -w", "permission denied"));
    const m = new SysctlManager(new SysctlWriter(runner));
    m.setDesired(BOTH);
    await assert.rejects(m.apply({ reread: false }), { name: "KernelError", phase: Phase.Address });
    runner.clear();
    await assert.rejects(m.apply({ reread: false }));
    assert.equal(runner.lines()[0], READ, "read again after the failure");

    // A recording runner, not a throwing one: a runner's error would come back wrapped as a
    // KernelError of the same phase, indistinguishable from the refusal.
    const untouched = new FakeRunner();
    const bad = new SysctlManager(new SysctlWriter(untouched));
    for (const spec of [
      { key: "net/ipv4/conf/eth1/arp_ignore 1", value: "1" },
      { key: "kernel.panic", value: "1" },
      { key: ARP_IGNORE, value: "1 2" },
      { key: "net/ipv4/conf/../arp_ignore", value: "1" },
    ]) {
      bad.setDesired([spec]);
      await assert.rejects(bad.apply({ reread: false }), {
        name: "KernelError",
        phase: Phase.Address,
        message: `invalid sysctl ${JSON.stringify(`${spec.key}=${spec.value}`)}`,
      });
    }
    assert.deepEqual(untouched.lines(), [], "nothing ran");
  });

  it("read() leaves the belief alone; adopt() makes the next apply diff against it", async () => {
    const runner = new FakeRunner().on(READ, "1\n0\n");
    const m = new SysctlManager(new SysctlWriter(runner));
    m.setDesired(BOTH);
    assert.equal(await m.apply({ reread: false }), 0);
    runner.on(READ, "1\n80\n");
    const snapshot = await m.read();
    runner.clear();
    assert.equal(await m.apply({ reread: false }), 0, "the belief is untouched");
    m.adopt(snapshot);
    assert.equal(await m.apply({ reread: false }), 1);
    assert.deepEqual(runner.lines(), [`sysctl -w ${PROXY_DELAY}=0`]);
  });

  it("with procSysDir, reads and writes the files under it and runs nothing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kube-eip-sysctl-"));
    try {
      for (const [key, value] of [
        [ARP_IGNORE, "0\n"],
        [PROXY_DELAY, "80\n"],
      ] as const) {
        await mkdir(dirname(join(dir, key)), { recursive: true });
        await writeFile(join(dir, key), value);
      }
      const runner = new FakeRunner();
      const m = new SysctlManager(new SysctlWriter(runner, { procSysDir: dir }));
      m.setDesired(BOTH);
      assert.equal(await m.apply({ reread: false }), 2);
      assert.equal(await readFile(join(dir, ARP_IGNORE), "utf8"), "1\n");
      assert.equal(await readFile(join(dir, PROXY_DELAY), "utf8"), "0\n");
      assert.deepEqual(
        [...(await m.read())],
        [
          [ARP_IGNORE, "1"],
          [PROXY_DELAY, "0"],
        ],
      );
      // A setting the kernel does not have (no such device) fails the phase.
      m.setDesired([{ key: "net/ipv4/conf/eth9/arp_ignore", value: "1" }]);
      await assert.rejects(m.apply({ reread: false }), {
        phase: Phase.Address,
        message: /ENOENT/,
      });
      assert.deepEqual(runner.lines(), [], "sysctl never ran");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
