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
    for (const [eip, message] of [
      ["0.0.0.0", "eipAddr must not be the unspecified address 0.0.0.0"],
      ["127.0.0.1", "eipAddr must not be a loopback address (127.0.0.0/8)"],
      ["127.255.0.9", "eipAddr must not be a loopback address (127.0.0.0/8)"],
      ["169.254.169.254", "eipAddr must not be a link-local address (169.254.0.0/16)"],
      ["224.0.0.18", "eipAddr must not be a multicast address (224.0.0.0/4)"],
      ["239.255.255.250", "eipAddr must not be a multicast address (224.0.0.0/4)"],
      ["255.255.255.255", "eipAddr must not be the limited broadcast address 255.255.255.255"],
    ] as const) {
      const said = await refusal(`special-${eip.replaceAll(".", "-")}`, {
        eipAddr: eip,
        vmiName: "vm",
      });
      assert.ok(said.includes(message), `${eip}: ${said}`);
    }
    const listed = JSON.parse(await cp.kubectl.run(["get", "eipbindings", "-o", "json"])) as {
      items: unknown[];
    };
    assert.equal(listed.items.length, 0, "nothing was stored");
  });

  test("addresses next to the special ranges are accepted", async () => {
    for (const eip of [
      "1.0.0.0",
      "126.255.255.255",
      "128.0.0.0",
      "169.253.255.255",
      "223.255.255.255",
      "240.0.0.1",
    ]) {
      await create(`edge-${eip.replaceAll(".", "-")}`, { eipAddr: eip, vmiName: "vm" });
    }
    await cp.kubectl.run(["delete", "eipbindings", "--all"]);
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
    assert.match(
      table,
      /^NAME\s+EIP\s+VMI\s+NODE\s+VMI-IP\s+READY\s+PROGRAMMED\s+ANNOUNCED\s+AGE\n/,
    );
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
