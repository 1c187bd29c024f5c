import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { HELM_GO_MOD, helmPath, helmVersion } from "./helm.js";

test("the Helm version is read from a require line of hack/helm/go.mod", async () => {
  assert.equal(helmVersion("require (\n\thelm.sh/helm/v3 v3.22.0 // indirect\n)\n"), "v3.22.0");
  assert.throws(() => helmVersion("require helm.sh/helm/v4 v4.3.1\n"), /does not require/);
  assert.match(helmVersion(await readFile(HELM_GO_MOD, "utf8")), /^v3\.\d+\.\d+$/);
});

test("helm is where scripts/helm-build.sh puts it", () => {
  assert.equal(helmPath("v3.22.0", { KUBE_EIP_CACHE: "/c" }), "/c/helm-v3.22.0/bin/helm");
  assert.equal(helmPath("v3.22.0", { HOME: "/h" }), "/h/.cache/kube-eip/helm-v3.22.0/bin/helm");
});
