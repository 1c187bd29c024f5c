// Where scripts/helm-build.sh puts helm, the one the chart's tests run: a cache outside the
// clone, one folder per Helm release, the release being the one hack/helm/go.mod pins.
import { access, constants, readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const HELM_GO_MOD = fileURLToPath(new URL("../../../hack/helm/go.mod", import.meta.url));

/** The helm.sh/helm/v3 version a go.mod requires. */
export function helmVersion(goMod: string): string {
  const match = /^\s*(?:require\s+)?helm\.sh\/helm\/v3\s+(v\d+\.\d+\.\d+\S*)/m.exec(goMod);
  if (!match?.[1]) throw new Error("go.mod does not require helm.sh/helm/v3");
  return match[1];
}

/** The same path scripts/helm-build.sh computes. */
export function helmPath(version: string, env: NodeJS.ProcessEnv = process.env): string {
  const cache = env["KUBE_EIP_CACHE"] || join(env["HOME"] || homedir(), ".cache", "kube-eip");
  return join(cache, `helm-${version}`, "bin", "helm");
}

/** helm of the pinned release; fails, saying how to build it, when it is missing. */
export async function findHelm(goModPath = HELM_GO_MOD): Promise<string> {
  const path = helmPath(helmVersion(await readFile(goModPath, "utf8")));
  try {
    await access(path, constants.X_OK);
  } catch {
    throw new Error(`${path} is missing: run scripts/helm-build.sh (or scripts/setup.sh)`);
  }
  return path;
}
