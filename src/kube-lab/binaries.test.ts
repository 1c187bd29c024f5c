import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { KUBE_GO_MOD, kubeBinDir, kubernetesVersion } from "./binaries.js";
import { subjectAltName } from "./pki.js";

test("the Kubernetes version is read from a require line, alone or in a block", () => {
  assert.equal(kubernetesVersion("module x\n\nrequire k8s.io/kubernetes v1.37.2\n"), "v1.37.2");
  assert.equal(
    kubernetesVersion(
      "require (\n\tk8s.io/kubernetes v1.36.3 // indirect\n\tk8s.io/api v0.36.3\n)\n",
    ),
    "v1.36.3",
  );
  assert.throws(
    () => kubernetesVersion("require k8s.io/kubernetes-extra v1.0.0\n"),
    /does not require/,
  );
  assert.throws(
    () => kubernetesVersion("\tk8s.io/api => k8s.io/api v0.37.2\n"),
    /does not require/,
  );
});

test("hack/kube/go.mod pins one Kubernetes release", async () => {
  assert.match(kubernetesVersion(await readFile(KUBE_GO_MOD, "utf8")), /^v1\.\d+\.\d+$/);
});

test("the binaries are where scripts/kube-build.sh puts them", () => {
  assert.equal(kubeBinDir("v1.37.2", { KUBE_EIP_CACHE: "/c" }), "/c/k8s-v1.37.2/bin");
  assert.equal(
    kubeBinDir("v1.37.2", { HOME: "/home/u" }),
    "/home/u/.cache/kube-eip/k8s-v1.37.2/bin",
  );
});

test("subjectAltName tells IP addresses from DNS names and names each once", () => {
  assert.equal(
    subjectAltName(["127.0.0.1", "localhost", "10.96.0.1", "127.0.0.1", "kubernetes.default"]),
    "IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default",
  );
});
