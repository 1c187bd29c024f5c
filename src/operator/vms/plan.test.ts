import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { EipBinding, Vmi } from "../types.js";
import { type PlanInput, type VmAction, bindingFor, isManaged, plan, poolOf } from "./plan.js";
import { EIP_ANNOTATION, MANAGED_BY_LABEL, type VirtualMachine } from "./types.js";

const NS = "shop";

function vm(name: string, annotation?: string, extra: Partial<VirtualMachine["metadata"]> = {}) {
  return {
    apiVersion: "kubevirt.io/v1",
    kind: "VirtualMachine",
    metadata: {
      name,
      namespace: NS,
      uid: `vm-${name}`,
      ...(annotation === undefined ? {} : { annotations: { [EIP_ANNOTATION]: annotation } }),
      ...extra,
    },
    spec: { template: { metadata: {} } },
  } satisfies VirtualMachine;
}

function vmi(name: string, options: { annotation?: string; ofVm?: boolean } = {}): Vmi {
  return {
    apiVersion: "kubevirt.io/v1",
    kind: "VirtualMachineInstance",
    metadata: {
      name,
      namespace: NS,
      uid: `vmi-${name}`,
      ...(options.annotation === undefined
        ? {}
        : { annotations: { [EIP_ANNOTATION]: options.annotation } }),
      ...(options.ofVm
        ? {
            ownerReferences: [
              {
                apiVersion: "kubevirt.io/v1",
                kind: "VirtualMachine",
                name,
                uid: `vm-${name}`,
                controller: true,
                blockOwnerDeletion: true,
              },
            ],
          }
        : {}),
    },
  };
}

function userBinding(name: string, vmiName: string): EipBinding {
  return { metadata: { name, namespace: NS, uid: `b-${name}` }, spec: { vmiName } };
}

function input(p: Partial<PlanInput> & { name: string }): PlanInput {
  return { namespace: NS, vm: undefined, vmi: undefined, named: undefined, forVmi: [], ...p };
}

function kind(a: VmAction): string {
  return a.kind === "report" ? `report ${a.reason}` : a.kind;
}

describe("vm bindings plan", () => {
  test("an annotated VM gets a binding of its name, owned by the VM, for the default pool", () => {
    const a = plan(input({ name: "web", vm: vm("web", "auto") }));
    assert.equal(a.kind, "create");
    assert.deepEqual(a.binding, {
      apiVersion: "extension.lucheng0127/v1",
      kind: "EipBinding",
      metadata: {
        name: "web",
        namespace: NS,
        labels: { [MANAGED_BY_LABEL]: "eip-operator" },
        ownerReferences: [
          {
            apiVersion: "kubevirt.io/v1",
            kind: "VirtualMachine",
            name: "web",
            uid: "vm-web",
            controller: true,
          },
        ],
      },
      spec: { vmiName: "web" },
    });
    assert.equal(a.requester.kind, "VirtualMachine");
  });

  test("a pool name becomes spec.poolName; the template's annotation counts too", () => {
    const a = plan(input({ name: "db", vm: vm("db", "public") }));
    assert.equal(a.kind === "create" && a.binding.spec.poolName, "public");
    const t = vm("t");
    t.spec.template.metadata = { annotations: { [EIP_ANNOTATION]: "tiny" } } as never;
    const b = plan(input({ name: "t", vm: t }));
    assert.equal(b.kind === "create" && b.binding.spec.poolName, "tiny");
  });

  test("a VM that is stopped keeps its binding; its VMI's own annotation does not add one", () => {
    const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
    owned.spec.eipAddr = "192.168.18.2";
    assert.equal(kind(plan(input({ name: "web", vm: vm("web", "auto"), named: owned }))), "none");
    assert.equal(
      kind(
        plan(
          input({
            name: "web",
            vm: vm("web", "auto"),
            vmi: vmi("web", { ofVm: true, annotation: "auto" }),
            named: owned,
            forVmi: [owned],
          }),
        ),
      ),
      "none",
    );
    // A VM without the annotation: its VMI's (copied from nowhere, or set by hand) is ignored.
    assert.equal(
      kind(
        plan(
          input({
            name: "web",
            vm: vm("web"),
            vmi: vmi("web", { ofVm: true, annotation: "auto" }),
          }),
        ),
      ),
      "none",
    );
  });

  test("a bare VMI's annotation asks for a binding owned by the VMI", () => {
    const a = plan(input({ name: "solo", vmi: vmi("solo", { annotation: "auto" }) }));
    assert.equal(a.kind, "create");
    assert.deepEqual(a.binding.metadata.ownerReferences, [
      {
        apiVersion: "kubevirt.io/v1",
        kind: "VirtualMachineInstance",
        name: "solo",
        uid: "vmi-solo",
        controller: true,
      },
    ]);
    // A VM's VMI whose VM is not (or no longer) there asks for nothing.
    assert.equal(
      kind(plan(input({ name: "x", vmi: vmi("x", { ofVm: true, annotation: "auto" }) }))),
      "none",
    );
  });

  test("the annotation removed, the VM or VMI deleted or being deleted: the binding is deleted", () => {
    const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
    const removed = plan(input({ name: "web", vm: vm("web"), named: owned }));
    assert.equal(removed.kind, "delete");
    assert.match(
      removed.kind === "delete" ? removed.why : "",
      /VirtualMachine web does not ask for an EIP/,
    );
    const gone = plan(input({ name: "web", named: owned }));
    assert.equal(gone.kind === "delete" && gone.requester, undefined);
    assert.match(gone.kind === "delete" ? gone.why : "", /VirtualMachine web is gone/);
    const going = plan(
      input({
        name: "web",
        vm: vm("web", "auto", { deletionTimestamp: "2026-01-01T00:00:00Z" }),
        named: owned,
      }),
    );
    assert.match(going.kind === "delete" ? going.why : "", /is being deleted/);
    // Already being deleted: nothing more to do.
    const deleting = {
      ...owned,
      metadata: { ...owned.metadata, deletionTimestamp: "2026-01-01T00:00:00Z" },
    };
    assert.equal(kind(plan(input({ name: "web", named: deleting }))), "none");
    const bare = bindingFor({ kind: "VirtualMachineInstance", object: vmi("solo") }, undefined);
    assert.equal(kind(plan(input({ name: "solo", named: bare }))), "delete");
  });

  test("a binding nobody made for an annotation is never deleted", () => {
    const mine = userBinding("web", "web");
    assert.equal(kind(plan(input({ name: "web", named: mine }))), "none");
    // The label alone, or the owner alone, is not enough.
    const labelled = {
      ...mine,
      metadata: { ...mine.metadata, labels: { [MANAGED_BY_LABEL]: "eip-operator" } },
    };
    assert.equal(isManaged(labelled), false);
    assert.equal(kind(plan(input({ name: "web", named: labelled }))), "none");
    const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
    const unlabelled = { ...owned, metadata: { ...owned.metadata, labels: {} } };
    assert.equal(isManaged(unlabelled), false);
    assert.equal(kind(plan(input({ name: "web", named: unlabelled }))), "none");
  });

  test("a user's binding for the VMI wins: none is made, and ours goes when one appears", () => {
    const theirs = userBinding("web-eip", "web");
    const none = plan(input({ name: "web", vm: vm("web", "auto"), forVmi: [theirs] }));
    assert.equal(kind(none), "report EipBindingByUser");
    const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
    const a = plan(
      input({ name: "web", vm: vm("web", "auto"), named: owned, forVmi: [owned, theirs] }),
    );
    assert.equal(a.kind, "delete");
    assert.match(
      a.kind === "delete" ? a.why : "",
      /EipBinding web-eip, not made for the annotation, names VMI web/,
    );
    // The user's binding of the VM's own name, for the VMI.
    assert.equal(
      kind(plan(input({ name: "web", vm: vm("web", "auto"), named: userBinding("web", "web") }))),
      "report EipBindingByUser",
    );
    // One being deleted no longer counts.
    const leaving = {
      ...theirs,
      metadata: { ...theirs.metadata, deletionTimestamp: "2026-01-01T00:00:00Z" },
    };
    assert.equal(
      kind(plan(input({ name: "web", vm: vm("web", "auto"), forVmi: [leaving] }))),
      "create",
    );
  });

  test("the name taken by another VMI's binding blocks the request", () => {
    const a = plan(
      input({ name: "web", vm: vm("web", "auto"), named: userBinding("web", "other") }),
    );
    assert.equal(kind(a), "report EipBindingNameTaken");
    assert.match(a.kind === "report" ? a.message : "", /exists for VMI other/);
  });

  test("an invalid value changes nothing, not even an existing binding", () => {
    for (const bad of ["", "Public", "no pool", "-x", "a".repeat(254)]) {
      assert.ok("error" in poolOf(bad), bad);
      const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
      const a = plan(input({ name: "web", vm: vm("web", bad), named: owned }));
      assert.equal(kind(a), "report InvalidEipAnnotation", bad);
      assert.equal(
        kind(plan(input({ name: "web", vm: vm("web", bad) }))),
        "report InvalidEipAnnotation",
      );
    }
    assert.deepEqual(poolOf(" auto "), { pool: undefined });
    assert.deepEqual(poolOf("team-a.pools"), { pool: "team-a.pools" });
  });

  test("another pool, or another owner of the name, replaces the binding", () => {
    const owned = bindingFor({ kind: "VirtualMachine", object: vm("web", "auto") }, undefined);
    const repooled = plan(input({ name: "web", vm: vm("web", "tiny"), named: owned }));
    assert.equal(repooled.kind, "delete");
    assert.match(
      repooled.kind === "delete" ? repooled.why : "",
      /asks for EipPool tiny, the binding for the default pool/,
    );
    // The VM deleted and made again: a new uid.
    const again = vm("web", "auto", { uid: "vm-web-2" });
    const a = plan(input({ name: "web", vm: again, named: owned }));
    assert.match(
      a.kind === "delete" ? a.why : "",
      /uid vm-web\), not to VirtualMachine web \(uid vm-web-2\)/,
    );
    // A bare VMI's binding, and now a VM of that name.
    const bare = bindingFor({ kind: "VirtualMachineInstance", object: vmi("web") }, undefined);
    assert.equal(
      kind(plan(input({ name: "web", vm: vm("web", "auto"), vmi: vmi("web"), named: bare }))),
      "delete",
    );
  });
});
