// Where scripts/kube-build.sh puts the Kubernetes binaries the tests run: a cache outside the
// clone, one folder per Kubernetes release, the release being the one hack/kube/go.mod pins.
import { access, constants, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const KUBE_GO_MOD = fileURLToPath(new URL("../../../hack/kube/go.mod", import.meta.url));

export interface KubeBinaries {
  /** The Kubernetes release, e.g. v1.37.2. */
  readonly version: string;
  readonly binDir: string;
  readonly kubeApiserver: string;
  readonly kubectl: string;
  readonly etcd: string;
}

/** The k8s.io/kubernetes version a go.mod requires. */
export function kubernetesVersion(goMod: string): string {
  const match = /^\s*(?:require\s+)?k8s\.io\/kubernetes\s+(v\d+\.\d+\.\d+\S*)/m.exec(goMod);
  if (!match?.[1]) throw new Error("go.mod does not require k8s.io/kubernetes");
  return match[1];
}

/** The same folder scripts/kube-build.sh computes. */
export function kubeBinDir(version: string, env: NodeJS.ProcessEnv = process.env): string {
  const cache = env["KUBE_EIP_CACHE"] || join(env["HOME"] || homedir(), ".cache", "kube-eip");
  return join(cache, `k8s-${version}`, "bin");
}

/** The binaries of the pinned release; fails, saying how to build them, when one is missing. */
export async function findKubeBinaries(goModPath = KUBE_GO_MOD): Promise<KubeBinaries> {
  const version = kubernetesVersion(await readFile(goModPath, "utf8"));
  const binDir = kubeBinDir(version);
  const binaries: KubeBinaries = {
    version,
    binDir,
    kubeApiserver: join(binDir, "kube-apiserver"),
    kubectl: join(binDir, "kubectl"),
    etcd: join(binDir, "etcd"),
  };
  for (const path of [binaries.kubeApiserver, binaries.kubectl, binaries.etcd]) {
    try {
      await access(path, constants.X_OK);
    } catch {
      throw new Error(`${path} is missing: run scripts/kube-build.sh (or scripts/setup.sh)`);
    }
  }
  return binaries;
}
