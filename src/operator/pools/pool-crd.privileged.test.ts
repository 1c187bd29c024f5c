// The EipPool CRD in a real kube-apiserver: pools with bad syntax are refused at admission
// (nothing stored), a good one is stored, and `kubectl get eippool` shows its addresses,
// allocated, free and age. An EipBinding may now name a pool instead of an address.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CommandError } from "../../kernel/runner.js";
import { type ControlPlane, startControlPlane } from "../../kube-lab/control-plane.js";

const skip = process.getuid?.() === 0 ? false : "needs root: runs etcd and kube-apiserver";
const crd = (name: string) =>
  fileURLToPath(new URL(`../../../../config/crd/bases/${name}`, import.meta.url));

function pool(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({
    apiVersion: "extension.lucheng0127/v1",
    kind: "EipPool",
    metadata: { name },
    spec,
  });
}

describe("EipPool CRD in a real kube-apiserver", { skip }, () => {
  let cp: ControlPlane;
  const create = (doc: string) => cp.kubectl.run(["create", "-f", "-"], { input: doc });
  const refusal = async (name: string, spec: Record<string, unknown>) => {
    try {
      await create(pool(name, spec));
    } catch (err) {
      assert.ok(err instanceof CommandError, String(err));
      return err.stderr;
    }
    return assert.fail(`${name} was accepted`);
  };

  before(async () => {
    cp = await startControlPlane();
    await cp.applyManifests([
      crd("extension.lucheng0127_eippools.yaml"),
      crd("extension.lucheng0127_eipbindings.yaml"),
    ]);
    await cp.waitForCrdEstablished("eippools.extension.lucheng0127");
    await cp.waitForCrdEstablished("eipbindings.extension.lucheng0127");
  });
  after(() => cp?.stop());

  test("pools with bad syntax are refused by the API server itself", async () => {
    assert.match(await refusal("none", {}), /addresses: Required/);
    assert.match(await refusal("empty", { addresses: [] }), /addresses/);
    assert.match(await refusal("octet", { addresses: ["192.168.18.300/24"] }), /addresses\[0\]/);
    assert.match(await refusal("prefix", { addresses: ["192.168.18.0/33"] }), /addresses\[0\]/);
    assert.match(await refusal("v6", { addresses: ["2001:db8::/64"] }), /addresses\[0\]/);
    assert.match(await refusal("hostbits", { addresses: ["192.168.18.5/24"] }), /no host bits set/);
    assert.match(
      await refusal("range", { addresses: ["192.168.18.10-192.168.18"] }),
      /addresses\[0\]/,
    );
    assert.match(
      await refusal("exclude", { addresses: ["192.168.18.0/24"], exclude: ["10.0.0.1/8"] }),
      /exclude\[0\]/,
    );
    assert.match(
      await refusal("limit", { addresses: ["192.168.18.0/24"], perNamespaceLimit: 0 }),
      /perNamespaceLimit/,
    );
    assert.match(
      await refusal("ns", { addresses: ["192.168.18.0/24"], namespaces: ["Not_A_Namespace"] }),
      /namespaces\[0\]/,
    );
    assert.match(
      await refusal("selector", {
        addresses: ["192.168.18.0/24"],
        namespaceSelector: { matchExpressions: [{ key: "team", operator: "In" }] },
      }),
      /need values/,
    );
    const listed = JSON.parse(await cp.kubectl.run(["get", "eippools", "-o", "json"])) as {
      items: unknown[];
    };
    assert.equal(listed.items.length, 0, "nothing was stored");
  });

  test("a good pool is stored; kubectl get shows addresses, allocated, free and age", async () => {
    await create(
      pool("public", {
        addresses: ["192.168.18.0/28", "192.168.18.100-192.168.18.110"],
        exclude: ["192.168.18.1"],
        namespaceSelector: { matchLabels: { tenant: "a" } },
        namespaces: ["team-b"],
        perNamespaceLimit: 2,
        default: true,
      }),
    );
    await cp.kubectl.run([
      "patch",
      "eippool",
      "public",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { allocated: 3, free: 20 } }),
    ]);
    const table = await cp.kubectl.run(["get", "eippool"]);
    assert.match(table, /^NAME\s+ADDRESSES\s+DEFAULT\s+ALLOCATED\s+FREE\s+AGE\n/);
    assert.match(
      table,
      /\npublic\s+\["192\.168\.18\.0\/28","192\.168\.18\.100-192\.168\.18\.110"\]\s+true\s+3\s+20\s+\S+\n/,
    );
  });

  test("an EipBinding may name a pool and no address; a bad pool name is refused", async () => {
    const binding = (name: string, spec: Record<string, unknown>) =>
      JSON.stringify({
        apiVersion: "extension.lucheng0127/v1",
        kind: "EipBinding",
        metadata: { name, namespace: "default" },
        spec,
      });
    await create(binding("auto", { vmiName: "vm" }));
    await create(binding("frompool", { vmiName: "vm", poolName: "public" }));
    await assert.rejects(create(binding("nopool", { vmiName: "vm", poolName: "" })), /poolName/);
  });
});
