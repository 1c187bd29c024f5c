// The container of a workload manifest in config/ (the agent's DaemonSet, the operator's
// Deployment) as a container runtime needs it: its args, privileges, user and mounts with the
// volumes behind them. The image tests run the images from these, so the manifests are what
// is proven, not a copy of them.
import { readFile } from "node:fs/promises";
import { parseAllDocuments } from "yaml";

export interface VolumeMount {
  readonly name: string;
  readonly mountPath: string;
  readonly readOnly: boolean;
  /** The volume's hostPath, if it is one. */
  readonly hostPath?: string;
  /** secret, emptyDir, ...: the volume's kind when it is not a hostPath. */
  readonly kind: string;
}

export interface WorkloadContainer {
  readonly args: readonly string[];
  /** securityContext.capabilities.add. */
  readonly capabilities: readonly string[];
  readonly dropsAll: boolean;
  readonly noPrivilegeEscalation: boolean;
  readonly readOnlyRootFilesystem: boolean;
  /** runAsUser/runAsGroup of the container or else the pod; fsGroup of the pod. */
  readonly runAsUser?: number;
  readonly runAsGroup?: number;
  readonly fsGroup?: number;
  readonly mounts: readonly VolumeMount[];
}

interface Security {
  runAsUser?: number;
  runAsGroup?: number;
  fsGroup?: number;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
}
interface PodSpec {
  securityContext?: Security;
  containers?: {
    args?: string[];
    securityContext?: Security;
    volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  }[];
  volumes?: ({ name: string; hostPath?: { path: string } } & Record<string, unknown>)[];
}

/** The first container of the manifest's first object of `kind`. */
export async function workloadContainer(file: string, kind: string): Promise<WorkloadContainer> {
  const docs = parseAllDocuments(await readFile(file, "utf8")).map(
    (d) => d.toJS() as { kind?: string; spec?: { template?: { spec?: PodSpec } } },
  );
  const pod = docs.find((d) => d.kind === kind)?.spec?.template?.spec;
  const c = pod?.containers?.[0];
  if (!pod || !c) throw new Error(`${file}: no ${kind} with a container`);
  const sc = c.securityContext ?? {};
  const podSc = pod.securityContext ?? {};
  const mounts = (c.volumeMounts ?? []).map((m) => {
    const v = pod.volumes?.find((vol) => vol.name === m.name);
    if (!v) throw new Error(`${file}: the mount ${m.name} has no volume`);
    const kindOf = Object.keys(v).find((k) => k !== "name") ?? "unknown";
    return {
      name: m.name,
      mountPath: m.mountPath,
      readOnly: m.readOnly ?? false,
      kind: kindOf,
      ...(v.hostPath ? { hostPath: v.hostPath.path } : {}),
    };
  });
  return {
    args: c.args ?? [],
    capabilities: sc.capabilities?.add ?? [],
    dropsAll: sc.capabilities?.drop?.includes("ALL") ?? false,
    noPrivilegeEscalation: sc.allowPrivilegeEscalation === false,
    readOnlyRootFilesystem: sc.readOnlyRootFilesystem === true,
    runAsUser: sc.runAsUser ?? podSc.runAsUser,
    runAsGroup: sc.runAsGroup ?? podSc.runAsGroup,
    fsGroup: podSc.fsGroup,
    mounts,
  };
}
