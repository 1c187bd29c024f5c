// The resources the operator names (EipBindings, VMIs, Nodes, Leases, Events) and the URL
// paths of their collections, objects and subresources.

export interface ResourceRef {
  /** "" for the core group. */
  readonly group: string;
  readonly version: string;
  /** The plural, lower case, as in the URL. */
  readonly resource: string;
  readonly namespaced: boolean;
}

export const EIPBINDINGS: ResourceRef = {
  group: "extension.lucheng0127",
  version: "v1",
  resource: "eipbindings",
  namespaced: true,
};

export const VMIS: ResourceRef = {
  group: "kubevirt.io",
  version: "v1",
  resource: "virtualmachineinstances",
  namespaced: true,
};

export const NODES: ResourceRef = {
  group: "",
  version: "v1",
  resource: "nodes",
  namespaced: false,
};

export const LEASES: ResourceRef = {
  group: "coordination.k8s.io",
  version: "v1",
  resource: "leases",
  namespaced: true,
};

export const EVENTS: ResourceRef = {
  group: "events.k8s.io",
  version: "v1",
  resource: "events",
  namespaced: true,
};

export interface ResourceLocation {
  /** Omitted (or "") for cluster-scoped resources, and for a namespaced list across all namespaces. */
  readonly namespace?: string;
  readonly name?: string;
  readonly subresource?: string;
}

/** The URL path of a resource, a collection or a subresource, each segment escaped. */
export function resourcePath(ref: ResourceRef, loc: ResourceLocation = {}): string {
  const seg = (s: string, what: string) => {
    if (s === "" || s === "." || s === ".." || s.includes("/")) {
      throw new Error(`bad ${what} ${JSON.stringify(s)}`);
    }
    return encodeURIComponent(s);
  };
  let path = ref.group === "" ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
  if (loc.namespace) {
    if (!ref.namespaced) throw new Error(`${ref.resource} are not namespaced`);
    path += `/namespaces/${seg(loc.namespace, "namespace")}`;
  }
  path += `/${ref.resource}`;
  if (loc.name !== undefined) path += `/${seg(loc.name, "name")}`;
  if (loc.subresource !== undefined) {
    if (loc.name === undefined) throw new Error("a subresource needs a name");
    path += `/${seg(loc.subresource, "subresource")}`;
  }
  return path;
}
