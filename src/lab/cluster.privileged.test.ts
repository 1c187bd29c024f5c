// The lab as a cluster: a real etcd and kube-apiserver in the router namespace, reached from
// the nodes at the router's management address; Node objects for the lab nodes; VMIs that
// are both lab namespaces and VirtualMachineInstance objects; bulk objects; everything gone
// with lab.down(). Needs root (namespaces, and the built Kubernetes binaries); skipped
// otherwise.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { CLUSTER_FILE, NODE_NAME_LABEL, startLabCluster, type LabCluster } from "./cluster.js";
import { KubeApiError } from "./kube-rest.js";
import { Lab } from "./lab.js";
import { listNamespaces, processAlive } from "./netns.js";

const skip = process.getuid?.() === 0 ? false : "needs root: builds network namespaces";

interface Vmi {
  metadata: { name: string; labels?: Record<string, string> };
  spec: {
    domain: { devices: { interfaces: { name: string; bridge?: object }[] } };
    networks: { name: string; pod?: object }[];
  };
  status: {
    phase?: string;
    nodeName?: string;
    interfaces?: { name?: string; ipAddress?: string; ipAddresses?: string[]; mac?: string }[];
    migrationState?: {
      completed?: boolean;
      sourceNode?: string;
      targetNode?: string;
      targetNodeAddress?: string;
    };
  };
}

interface KubeNode {
  metadata: { name: string };
  spec: { podCIDR?: string };
  status: {
    addresses: { type: string; address: string }[];
    conditions: { type: string; status: string }[];
  };
}

describe("lab cluster (3 nodes): control plane in the router namespace", { skip }, () => {
  const prefix = `keip-cl${randomBytes(3).toString("hex")}`;
  let lab: Lab;
  let cluster: LabCluster;
  let upMs = 0;

  before(async () => {
    lab = await Lab.up({ nodes: 3, prefix, removeOnExit: true });
    const started = performance.now();
    cluster = await startLabCluster(lab);
    upMs = Math.round(performance.now() - started);
  });

  after(() => lab?.down());

  test("etcd and kube-apiserver run in the router namespace on its management address", (t) => {
    t.diagnostic(`cluster up in ${upMs} ms: ${JSON.stringify(cluster.startup)}`);
    const router = lab.describe().router;
    assert.equal(cluster.server, `https://${router.mgmtAddress}:6443`);
    assert.equal(cluster.routerNamespace, router.namespace);
    const routerNs = statSync(`/run/netns/${router.namespace}`).ino;
    const pids = cluster.controlPlane.pids();
    for (const pid of [pids.etcd, pids.apiServer]) {
      assert.ok(pid !== undefined && processAlive(pid));
      assert.equal(statSync(`/proc/${pid}/ns/net`).ino, routerNs, `pid ${pid} in the router`);
    }
    assert.ok(cluster.dir.startsWith(lab.runDir), "the run dir is the lab's");
    const description = JSON.parse(readFileSync(join(cluster.dir, CLUSTER_FILE), "utf8")) as {
      server: string;
      kubeconfig: string;
    };
    assert.equal(description.server, cluster.server);
    assert.equal(description.kubeconfig, cluster.kubeconfig);
    assert.deepEqual(cluster.operatorEnv(), { KUBECONFIG: cluster.kubeconfig });
    assert.equal(cluster.nodeAgentAddress(2), "172.16.0.12:6127");
  });

  test("from node1's namespace kubectl reaches the apiserver; the nodes carry their InternalIPs", async () => {
    const kubectl = cluster.controlPlane.binaries.kubectl;
    const { stdout } = await lab.nodeExec(1, [
      kubectl,
      "--kubeconfig",
      cluster.kubeconfig,
      "get",
      "nodes",
      "-o",
      "wide",
      "--no-headers",
    ]);
    const rows = stdout
      .trim()
      .split("\n")
      .map((line) => line.split(/\s+/));
    assert.deepEqual(
      rows.map((r) => [r[0], r[1], r[5]]),
      [
        ["node1", "Ready", "172.16.0.11"],
        ["node2", "Ready", "172.16.0.12"],
        ["node3", "Ready", "172.16.0.13"],
      ],
    );
    for (let i = 1; i <= 3; i++) {
      const node = JSON.parse(
        await cluster.kubectl(["get", "node", lab.node(i).name, "-o", "json"]),
      ) as KubeNode;
      assert.deepEqual(node.status.addresses, [
        { type: "InternalIP", address: lab.node(i).mgmtAddress },
        { type: "Hostname", address: `node${i}` },
      ]);
      assert.equal(node.status.conditions.find((c) => c.type === "Ready")?.status, "True");
      assert.equal(node.spec.podCIDR, lab.node(i).podCidr);
    }
    const crds = await cluster.kubectl(["get", "crd", "-o", "name"]);
    assert.match(crds, /eipbindings\.extension\.lucheng0127/);
    assert.match(crds, /eippools\.extension\.lucheng0127/);
    assert.match(crds, /virtualmachineinstances\.kubevirt\.io/);
    assert.match(crds, /virtualmachines\.kubevirt\.io/);
  });

  test("createVmi: the object's status matches the lab VMI, which answers ping from its node", async () => {
    const vmi = await cluster.createVmi("a", 1);
    const labVmi = lab.vmi("a");
    assert.deepEqual([vmi.address, vmi.node, vmi.plugged], [labVmi.address, 1, true]);
    const obj = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.equal(obj.status.phase, "Running");
    assert.equal(obj.status.nodeName, "node1");
    assert.equal(obj.status.interfaces?.[0]?.ipAddress, labVmi.address);
    assert.deepEqual(obj.status.interfaces?.[0]?.ipAddresses, [labVmi.address]);
    assert.equal(obj.status.interfaces?.[0]?.name, "default");
    assert.equal(obj.status.interfaces?.[0]?.mac, labVmi.mac);
    assert.equal(obj.status.migrationState, undefined);
    assert.equal(obj.metadata.labels?.[NODE_NAME_LABEL], "node1");
    assert.deepEqual(obj.spec.networks, [{ name: "default", pod: {} }]);
    assert.equal(obj.spec.domain.devices.interfaces[0]?.name, "default");
    assert.ok((await lab.ping(lab.nodeNamespace(1), labVmi.address)).replied);
    const table = await cluster.kubectl(["get", "vmi", "a", "--no-headers"]);
    assert.match(table, /^a\s+\S+\s+Running\s+10\.244\.1\.10\s+node1\s+True/);
    // The address is the lab's and cluster's both: neither hands it out twice.
    await assert.rejects(cluster.createVmi("b", 1, { address: labVmi.address }), /not free/);
    await assert.rejects(cluster.createVmi("a", 2), /exists/);
  });

  test("setVmiPhase writes what virt-handler reports in each phase", async () => {
    await cluster.setVmiPhase("a", "Scheduled");
    let obj = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.deepEqual([obj.status.phase, obj.status.nodeName], ["Scheduled", "node1"]);
    assert.equal(obj.status.interfaces, undefined, "no interfaces before Running");
    await cluster.setVmiPhase("a", "Pending");
    obj = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.deepEqual([obj.status.phase, obj.status.nodeName], ["Pending", undefined]);
    assert.equal(obj.metadata.labels?.[NODE_NAME_LABEL], undefined);
    const at = await cluster.setVmiPhase("a", "Running");
    assert.ok(at <= performance.now());
    obj = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.equal(obj.status.interfaces?.[0]?.ipAddress, "10.244.1.10");
    assert.equal(obj.metadata.labels?.[NODE_NAME_LABEL], "node1");
    await assert.rejects(cluster.setVmiPhase("a", "Migrating" as "Running"), /unknown VMI phase/);
  });

  test("moveVmi re-plugs the lab VMI and writes a completed migration", async () => {
    const before = performance.now();
    const at = await cluster.moveVmi("a", 2);
    assert.ok(at > before && at <= performance.now());
    const labVmi = lab.vmi("a");
    assert.deepEqual([labVmi.node, labVmi.address], [2, "10.244.2.10"]);
    assert.deepEqual([cluster.vmi("a").node, cluster.vmi("a").address], [2, "10.244.2.10"]);
    const obj = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.equal(obj.status.phase, "Running");
    assert.equal(obj.status.nodeName, "node2");
    assert.equal(obj.status.interfaces?.[0]?.ipAddress, "10.244.2.10");
    assert.equal(obj.status.migrationState?.completed, true);
    assert.equal(obj.status.migrationState?.sourceNode, "node1");
    assert.equal(obj.status.migrationState?.targetNode, "node2");
    assert.equal(obj.status.migrationState?.targetNodeAddress, "172.16.0.12");
    assert.equal(obj.metadata.labels?.[NODE_NAME_LABEL], "node2");
    assert.ok((await lab.ping(lab.nodeNamespace(2), "10.244.2.10")).replied);
    // An explicit address, on to node 3.
    await cluster.moveVmi("a", 3, { newAddress: "10.244.3.77" });
    assert.equal(lab.vmi("a").address, "10.244.3.77");
    const moved = (await cluster.getVmiObject("a")) as unknown as Vmi;
    assert.equal(moved.status.interfaces?.[0]?.ipAddress, "10.244.3.77");
    assert.equal(moved.status.migrationState?.sourceNode, "node2");
    assert.ok((await lab.ping(lab.nodeNamespace(3), "10.244.3.77")).replied);
  });

  test("deleteVmi removes the object and the lab VMI", async () => {
    const netns = cluster.vmi("a").netns ?? assert.fail();
    await cluster.deleteVmi("a");
    assert.ok(!listNamespaces().includes(netns));
    await assert.rejects(
      cluster.api.get("/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances/a"),
      (err: unknown) => err instanceof KubeApiError && err.status === 404,
    );
    assert.deepEqual(cluster.listVmis(), []);
  });

  test("500 VMI objects without lab VMIs, in seconds; one plugged later", async (t) => {
    const specs = Array.from({ length: 500 }, (_, k) => ({ name: `bulk-${k}`, node: 1 + (k % 3) }));
    const started = performance.now();
    const vmis = await cluster.createVmis(specs, { namespace: "bench", plug: false });
    const ms = Math.round(performance.now() - started);
    t.diagnostic(`500 VMI objects created and their status written in ${ms} ms`);
    assert.equal(vmis.length, 500);
    assert.equal(new Set(vmis.map((v) => v.address)).size, 500, "addresses are unique");
    assert.ok(vmis.every((v) => !v.plugged && lab.addressing.nodeOfPodAddress(v.address, 3)));
    assert.ok(ms < 60_000, `took ${ms} ms`);
    const list = JSON.parse(await cluster.kubectl(["get", "vmi", "-n", "bench", "-o", "json"])) as {
      items: Vmi[];
    };
    assert.equal(list.items.length, 500);
    const byName = new Map(vmis.map((v) => [v.name, v]));
    for (const item of list.items) {
      const want = byName.get(item.metadata.name) ?? assert.fail(item.metadata.name);
      assert.equal(item.status.phase, "Running");
      assert.equal(item.status.nodeName, want.nodeName);
      assert.equal(item.status.interfaces?.[0]?.ipAddress, want.address);
    }
    // The benchmark plugs a sample.
    const sample = vmis[7] ?? assert.fail();
    const plugged = await cluster.plugVmi(sample.name);
    assert.equal(lab.vmi(sample.name).address, sample.address);
    assert.ok((await lab.ping(lab.nodeNamespace(sample.node), sample.address)).replied);
    const obj = (await cluster.getVmiObject(sample.name)) as unknown as Vmi;
    assert.equal(obj.status.interfaces?.[0]?.mac, plugged.mac, "the lab VMI's MAC reported");
  });

  test("more VMI objects on a node than its /24 holds: addresses from the spare pool", async () => {
    const specs = Array.from({ length: 300 }, (_, k) => ({ name: `spare-${k}`, node: 1 }));
    const vmis = await cluster.createVmis(specs, {
      namespace: "spare",
      plug: false,
      addressPool: "spare",
    });
    assert.equal(new Set(vmis.map((v) => v.address)).size, 300, "addresses are unique");
    // After the last node's /24 (10.244.3.0/24), .0 and .255 skipped.
    assert.equal(vmis[0]?.address, "10.244.4.1");
    assert.equal(vmis[254]?.address, "10.244.5.1");
    assert.ok(vmis.every((v) => v.address.startsWith("10.244.") && v.node === 1));
    assert.ok(vmis.every((v) => lab.addressing.nodeOfPodAddress(v.address, 3) === undefined));
    const obj = (await cluster.getVmiObject("spare-299")) as unknown as Vmi;
    assert.equal(obj.status.nodeName, "node1");
    assert.equal(obj.status.interfaces?.[0]?.ipAddress, vmis[299]?.address);
    await assert.rejects(cluster.plugVmi("spare-0"), /outside node 1's \/24: not pluggable/);
    await assert.rejects(
      cluster.createVmis([{ name: "spare-x", node: 2 }], { addressPool: "spare" }),
      /needs plug: false/,
    );
    await assert.rejects(
      cluster.createVmis([{ name: "spare-x", node: 2, address: "10.244.4.1" }], {
        plug: false,
        addressPool: "spare",
      }),
      /not free/,
    );
    const [chosen] = await cluster.createVmis(
      [{ name: "spare-x", node: 2, address: "10.244.200.7" }],
      { plug: false, addressPool: "spare" },
    );
    assert.equal(chosen?.address, "10.244.200.7");
  });

  test("lab.down() stops the control plane and removes every namespace", async (t) => {
    const pids = cluster.controlPlane.pids();
    const all = [pids.etcd, pids.apiServer, ...lab.describe().pids];
    const namespaces = lab.namespaces();
    assert.ok(pids.etcd !== undefined && pids.apiServer !== undefined);
    const started = performance.now();
    await lab.down();
    t.diagnostic(`lab with its cluster down in ${Math.round(performance.now() - started)} ms`);
    for (const pid of all) assert.ok(!processAlive(pid ?? 0), `pid ${pid} is gone`);
    assert.deepEqual(cluster.controlPlane.pids(), { etcd: undefined, apiServer: undefined });
    assert.deepEqual(
      listNamespaces().filter((ns) => ns.startsWith(`${prefix}-`) || namespaces.includes(ns)),
      [],
    );
    assert.ok(!existsSync(lab.runDir));
    assert.throws(() => cluster.vmi("a"), /no VMI/);
    await assert.rejects(cluster.createVmi("late", 1), /stopped/);
  });
});
