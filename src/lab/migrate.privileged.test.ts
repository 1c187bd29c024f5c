// migrateVmi: a live migration that keeps the VMI's address, as under a CNI that keeps VM
// addresses across nodes. Real namespaces, real routes, real TCP streams across the moves.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Lab } from "./lab.js";
import { openStream, type TcpStream } from "./streams.js";
import { MACS } from "./topology.js";

const skip = process.getuid?.() === 0 ? false : "needs root: builds network namespaces";

describe("migrateVmi keeps the VMI's address", { skip }, () => {
  let lab: Lab;
  let streams: TcpStream[] = [];
  const guest = () => lab.vmiNamespace("a");
  const routesTo = async (node: number, address: string) =>
    (await lab.nodeExec(node, ["ip", "-4", "route", "show", `${address}/32`])).stdout.trim();

  before(async () => {
    lab = await Lab.up({ nodes: 3, removeOnExit: true });
    await lab.addVmi("a", 1);
    streams = [
      await openStream(lab, {
        name: "pod",
        serverNs: guest(),
        clientNs: lab.pod().namespace,
        address: lab.vmi("a").address,
        port: 7000,
      }),
      await openStream(lab, {
        name: "node3",
        serverNs: guest(),
        clientNs: lab.nodeNamespace(3),
        address: lab.vmi("a").address,
        port: 7001,
      }),
    ];
  });

  after(async () => {
    await lab?.down();
  });

  test("to another node and on, then home: the guest is untouched and its connections go on", async () => {
    const before = lab.vmi("a");
    const link = async () =>
      (await lab.exec(guest(), ["ip", "-o", "link", "show", "eth0"])).stdout.split(":")[0];
    const ifindex = await link();
    for (const to of [2, 3, 1]) {
      const t0 = Date.now();
      await lab.migrateVmi("a", to);
      const took = Date.now() - t0;
      const now = lab.vmi("a");
      assert.deepEqual([now.node, now.address, now.mac], [to, before.address, before.mac]);
      for (const s of streams) await s.waitFlowing(Date.now(), 10_000);
      const stalls = streams.map((s) => `${s.name} ${s.longestStallMs(t0)} ms`);
      console.log(`# migrate to node${to} (${took} ms): longest stall ${stalls.join(", ")}`);
      assert.equal(await link(), ifindex, "the guest's eth0 is the same device");
      for (const k of [1, 2, 3]) {
        const route = await routesTo(k, before.address);
        if (to === 1) assert.equal(route, "", `node${k}: no /32 once home`);
        else if (k === to) assert.match(route, new RegExp(`dev ${before.hostVeth}`));
        else assert.match(route, new RegExp(`via ${lab.node(to).mgmtAddress} `));
      }
    }
    assert.deepEqual(
      streams.flatMap((s) => s.problems()),
      [],
    );
  });

  test("away from home, the guest's ARP for its gateway is answered (proxy ARP)", async () => {
    await lab.migrateVmi("a", 2);
    await lab.exec(guest(), ["ip", "neigh", "flush", "dev", "eth0"]);
    assert.ok((await lab.ping(guest(), lab.node(1).bridgeAddress)).replied);
    const neigh = (await lab.exec(guest(), ["ip", "neigh", "show", lab.node(1).bridgeAddress]))
      .stdout;
    assert.match(
      neigh,
      new RegExp(`lladdr ${MACS.nodeBridge(1)}`),
      "node1's cni0 MAC, answered on node2",
    );
  });

  test("an away VMI keeps its address taken at home; removing it drops its routes", async () => {
    const b = await lab.addVmi("b", 1);
    assert.notEqual(b.address, lab.vmi("a").address);
    for (const s of streams) await s.stop();
    const address = lab.vmi("a").address;
    await lab.removeVmi("a");
    for (const k of [1, 2, 3]) assert.equal(await routesTo(k, address), "", `node${k}`);
  });
});
