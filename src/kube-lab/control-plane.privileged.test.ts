// A real etcd and kube-apiserver (built by scripts/kube-build.sh), driven with the real
// kubectl: the VMI CRD, a VMI's status written as virt-handler would, a ServiceAccount token
// under RBAC, an apiserver restart on the same etcd, and a stop that leaves no process. The
// second part runs the control plane inside a throwaway network namespace. Needs root (the
// namespace, and the convention for tests that run real daemons); skipped otherwise.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { CommandError, ExecRunner } from "../kernel/runner.js";
import { processAlive } from "../lab/netns.js";
import { startControlPlane, type ControlPlane } from "./control-plane.js";

const skip = process.getuid?.() === 0 ? false : "needs root: runs etcd and kube-apiserver";
const runner = new ExecRunner();

const VMI_CRD = fileURLToPath(
  new URL("../../../e2e/fixtures/kubevirt-vmi-crd.yaml", import.meta.url),
);
const VMI_CRD_NAME = "virtualmachineinstances.kubevirt.io";
const NS = "vmis";

interface Vmi {
  spec?: { domain?: { devices?: { interfaces?: { name?: string }[] } }; futureField?: string };
  status?: { phase?: string; nodeName?: string; interfaces?: { ipAddress?: string }[] };
}

/** The error kubectl failed with (its stderr), or assert.fail if it succeeded. */
async function kubectlError(run: Promise<unknown>): Promise<string> {
  try {
    await run;
  } catch (err) {
    assert.ok(err instanceof CommandError, String(err));
    return err.stderr;
  }
  return assert.fail("kubectl succeeded");
}

describe("control plane on loopback: etcd, kube-apiserver, kubectl", { skip }, () => {
  let cp: ControlPlane;
  const apiServerPids: number[] = [];
  let etcdPid: number;

  before(async () => {
    cp = await startControlPlane();
    const pids = cp.pids();
    assert.ok(pids.etcd && pids.apiServer, "both processes run");
    etcdPid = pids.etcd;
    apiServerPids.push(pids.apiServer);
  });

  after(() => cp?.stop());

  test("listens on 127.0.0.1 only and reports the pinned version", async () => {
    assert.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/);
    const version = (await cp.kubectl.run(["get", "--raw=/version"])).trim();
    assert.equal((JSON.parse(version) as { gitVersion: string }).gitVersion, cp.binaries.version);
  });

  test("serves the VMI CRD; a VMI's status is written only through the status subresource", async () => {
    await cp.applyManifests([VMI_CRD]);
    await cp.waitForCrdEstablished(VMI_CRD_NAME);
    await cp.kubectl.run(["create", "namespace", NS]);
    const vmi = {
      apiVersion: "kubevirt.io/v1",
      kind: "VirtualMachineInstance",
      metadata: { name: "vmi-a", namespace: NS },
      spec: { domain: { devices: { interfaces: [{ name: "default" }] } }, futureField: "kept" },
      status: { phase: "Running" },
    };
    await cp.kubectl.run(["create", "-f", "-"], { input: JSON.stringify(vmi) });
    const created = (await cp.kubectl.getJson(["vmi", "vmi-a", "-n", NS])) as Vmi;
    assert.equal(created.spec?.futureField, "kept", "unknown fields are kept");
    assert.equal(created.spec?.domain?.devices?.interfaces?.[0]?.name, "default");
    assert.equal(created.status?.phase, undefined, "status on create is dropped");

    const status = {
      status: { phase: "Running", nodeName: "node1", interfaces: [{ ipAddress: "10.244.1.10" }] },
    };
    await cp.kubectl.run([
      "patch",
      "virtualmachineinstance",
      "vmi-a",
      "-n",
      NS,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    // A patch of the main resource must not change the status.
    await cp.kubectl.run([
      "patch",
      "vmis",
      "vmi-a",
      "-n",
      NS,
      "--type=merge",
      "-p",
      JSON.stringify({ status: { phase: "Failed" } }),
    ]);
    const read = (await cp.kubectl.getJson([
      "virtualmachineinstances.kubevirt.io",
      "vmi-a",
      "-n",
      NS,
    ])) as Vmi;
    assert.deepEqual(read.status, status.status);
    const table = await cp.kubectl.run(["get", "vmi", "-n", NS, "--no-headers"]);
    assert.match(table, /^vmi-a\s+\S+\s+Running\s+10\.244\.1\.10\s+node1\s/);
  });

  test("RBAC denies a ServiceAccount's token the nodes until a ClusterRole and binding allow it", async () => {
    await cp.kubectl.run(["create", "serviceaccount", "lister", "-n", NS]);
    const token = (
      await cp.kubectl.run(["create", "token", "lister", "-n", NS, "--duration=1h"])
    ).trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, "a JWT");
    const sa = cp.kubectl.withKubeconfig(await cp.writeTokenKubeconfig("lister", token));

    const whoami = (await sa.run(["auth", "whoami", "-o", "json"])) as string;
    const user = (JSON.parse(whoami) as { status: { userInfo: { username: string } } }).status
      .userInfo;
    assert.equal(user.username, `system:serviceaccount:${NS}:lister`);
    const denied = await kubectlError(sa.run(["get", "nodes"]));
    assert.match(denied, /forbidden.*cannot list resource "nodes"/);

    await cp.kubectl.run([
      "create",
      "clusterrole",
      "node-reader",
      "--verb=list",
      "--resource=nodes",
    ]);
    await cp.kubectl.run([
      "create",
      "clusterrolebinding",
      "lister-node-reader",
      "--clusterrole=node-reader",
      `--serviceaccount=${NS}:lister`,
    ]);
    // The RBAC authorizer reads roles from an informer: the binding takes effect shortly.
    let nodes: unknown;
    for (let i = 0; nodes === undefined; i++) {
      try {
        nodes = await sa.getJson(["nodes"]);
      } catch (err) {
        if (i >= 50) throw err;
        await sleep(100);
      }
    }
    assert.deepEqual((nodes as { items: unknown[] }).items, []);
    // Allowed to list nodes, and nothing else.
    assert.match(await kubectlError(sa.run(["get", "vmis", "-n", NS])), /forbidden/);
  });

  test("the apiserver restarts on the same etcd: objects and tokens survive", async () => {
    const token = (await cp.kubectl.run(["create", "token", "lister", "-n", NS])).trim();
    await cp.restartApiServer();
    const pids = cp.pids();
    assert.equal(pids.etcd, etcdPid, "etcd kept running");
    assert.ok(pids.apiServer !== undefined && pids.apiServer !== apiServerPids[0]);
    apiServerPids.push(pids.apiServer);
    const before = apiServerPids[0] ?? assert.fail();
    assert.equal(processAlive(before), false, "the old apiserver is gone");

    const vmi = (await cp.kubectl.getJson(["vmi", "vmi-a", "-n", NS])) as Vmi;
    assert.equal(vmi.status?.phase, "Running");
    assert.equal(vmi.status?.interfaces?.[0]?.ipAddress, "10.244.1.10");
    const sa = cp.kubectl.withKubeconfig(await cp.writeTokenKubeconfig("lister2", token));
    assert.deepEqual(((await sa.getJson(["nodes"])) as { items: unknown[] }).items, []);
  });

  test("stop() ends etcd and every apiserver it started, and is idempotent", async () => {
    const dir = cp.dir;
    await Promise.all([cp.stop(), cp.stop()]);
    await cp.stop();
    for (const pid of [etcdPid, ...apiServerPids]) {
      assert.equal(processAlive(pid), false, `pid ${pid} is gone`);
    }
    assert.deepEqual(cp.pids(), { etcd: undefined, apiServer: undefined });
    assert.equal(existsSync(dir), false, "the temporary run dir is removed");
  });
});

describe("control plane in a network namespace", { skip }, () => {
  const ns = `keip-kcp-${randomBytes(3).toString("hex")}`;
  let cp: ControlPlane | undefined;

  before(async () => {
    await runner.run("ip", ["netns", "add", ns]);
    await runner.run("ip", ["-n", ns, "link", "set", "lo", "up"]);
  });

  after(async () => {
    await cp?.stop();
    await runner.run("ip", ["netns", "del", ns]);
  });

  test("etcd and the apiserver run in the namespace, and kubectl reaches them there", async () => {
    cp = await startControlPlane({ netns: ns });
    const nsInode = statSync(`/run/netns/${ns}`).ino;
    const pids = cp.pids();
    for (const pid of [pids.etcd, pids.apiServer]) {
      assert.ok(pid !== undefined);
      assert.equal(statSync(`/proc/${pid}/ns/net`).ino, nsInode, `pid ${pid} is in ${ns}`);
    }
    assert.equal(cp.server, "https://127.0.0.1:6443");
    await cp.applyManifests([VMI_CRD]);
    await cp.waitForCrdEstablished(VMI_CRD_NAME);
    assert.match(await cp.kubectl.run(["api-resources", "--api-group=kubevirt.io"]), /vmi,vmis/);
    await cp.stop();
    for (const pid of [pids.etcd, pids.apiServer]) assert.equal(processAlive(pid ?? 0), false);
  });
});
