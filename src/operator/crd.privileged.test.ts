// The EipBinding CRD in a real kube-apiserver: bad objects refused at admission, the seed's
// objects still accepted, the status subresource with a Ready condition that `kubectl wait`
// understands, and the columns of `kubectl get`.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CommandError } from "../kernel/runner.js";
import { type ControlPlane, startControlPlane } from "../kube-lab/control-plane.js";

const skip = process.getuid?.() === 0 ? false : "needs root: runs etcd and kube-apiserver";
const CRD = fileURLToPath(
  new URL("../../../config/crd/bases/extension.lucheng0127_eipbindings.yaml", import.meta.url),
);

function binding(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: "extension.lucheng0127/v1",
    kind: "EipBinding",
    metadata: { name, namespace: "default" },
    spec,
  });
}

describe("EipBinding CRD in a real kube-apiserver", { skip }, () => {
  let cp: ControlPlane;
  const create = (name: string, spec: Record<string, unknown>) =>
    cp.kubectl.run(["create", "-f", "-"], { input: binding(name, spec) });
  const refusal = async (name: string, spec: Record<string, unknown>) => {
    try {
      await create(name, spec);
    } catch (err) {
      assert.ok(err instanceof CommandError, String(err));
      return err.stderr;
    }
    return assert.fail(`${name} was accepted`);
  };

  before(async () => {
    cp = await startControlPlane();
    await cp.applyManifests([CRD]);
    await cp.waitForCrdEstablished("eipbindings.extension.lucheng0127");
  });
  after(() => cp?.stop());

  test("bad objects are refused by the API server itself", async () => {
    assert.match(await refusal("bad-ip", { eipAddr: "192.168.18.300", vmiName: "vm" }), /eipAddr/);
    assert.match(await refusal("not-ip", { eipAddr: "eip-one", vmiName: "vm" }), /eipAddr/);
    assert.match(await refusal("ipv6", { eipAddr: "2001:db8::1", vmiName: "vm" }), /eipAddr/);
    assert.match(await refusal("no-vmi", { eipAddr: "192.168.18.100" }), /vmiName: Required/);
    assert.match(
      await refusal("bad-vmi", { eipAddr: "192.168.18.100", vmiName: "Not_A_Name" }),
      /vmiName/,
    );
    const listed = JSON.parse(await cp.kubectl.run(["get", "eipbindings", "-o", "json"])) as {
      items: unknown[];
    };
    assert.equal(listed.items.length, 0, "nothing was stored");
  });

  test("an object the seed's operator wrote (its bookkeeping in spec) is accepted as it is", async () => {
    await create("seed", {
      eipAddr: "192.168.18.101",
      vmiName: "cirros",
      currentHyper: "node1",
      currentIPAddr: "10.244.1.10",
      lastHyper: "",
      lastIPAddr: "",
      phase: "Ready",
    });
    const got = JSON.parse(await cp.kubectl.run(["get", "eipbinding", "seed", "-o", "json"])) as {
      spec: Record<string, string>;
    };
    assert.equal(got.spec.currentHyper, "node1");
    assert.equal(got.spec.phase, "Ready");
  });

  test("status is a subresource with a standard Ready condition; kubectl wait and get show it", async () => {
    await create("web", { eipAddr: "192.168.18.100", vmiName: "web" });
    const wait = cp.kubectl.run([
      "wait",
      "--for=condition=Ready",
      "eipbinding/web",
      "--timeout=20s",
    ]);
    const status = {
      status: {
        eipAddr: "192.168.18.100",
        nodeName: "node1",
        vmiAddress: "10.244.1.10",
        observedGeneration: 1,
        conditions: [
          {
            type: "Ready",
            status: "True",
            observedGeneration: 1,
            lastTransitionTime: "2026-11-26T00:00:00Z",
            reason: "Bound",
            message: "EIP 192.168.18.100 is bound to VMI web (10.244.1.10) on node1",
          },
        ],
      },
    };
    // Status sent with the object is ignored; only the subresource writes it.
    await cp.kubectl.run([
      "patch",
      "eipbinding",
      "web",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    const before = JSON.parse(await cp.kubectl.run(["get", "eipbinding", "web", "-o", "json"])) as {
      status?: unknown;
    };
    assert.equal(before.status, undefined);
    await cp.kubectl.run([
      "patch",
      "eipbinding",
      "web",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify(status),
    ]);
    assert.match(await wait, /condition met/);
    const table = await cp.kubectl.run(["get", "eipbinding", "web"]);
    assert.match(table, /^NAME\s+EIP\s+VMI\s+NODE\s+VMI-IP\s+READY\s+AGE\n/);
    assert.match(table, /\nweb\s+192\.168\.18\.100\s+web\s+node1\s+10\.244\.1\.10\s+True\s+\S+\n/);
    const wide = await cp.kubectl.run(["get", "eipbinding", "web", "-o", "wide"]);
    assert.match(wide, /REASON\s+MESSAGE/);
    assert.match(wide, /Bound\s+EIP 192\.168\.18\.100 is bound/);
  });

  test("a condition with a bad shape is refused", async () => {
    const bad = { status: { conditions: [{ type: "Ready", status: "Yes" }] } };
    await assert.rejects(
      cp.kubectl.run([
        "patch",
        "eipbinding",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        JSON.stringify(bad),
      ]),
      /Unsupported value: "Yes"|lastTransitionTime: Required/,
    );
  });
});
