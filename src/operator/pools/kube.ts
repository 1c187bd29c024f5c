// The pools' side of the API: the resources they read and their writes.
import { EIPBINDINGS, type KubeClient, type ResourceRef, isConflict } from "../../kube/client.js";
import { type EipBinding, FINALIZER } from "../types.js";
import type { PoolWriter } from "./gate.js";
import { ALLOCATED_FROM } from "./types.js";

export const EIPPOOLS: ResourceRef = {
  group: "extension.lucheng0127",
  version: "v1",
  resource: "eippools",
  namespaced: false,
};
export const NAMESPACES: ResourceRef = {
  group: "",
  version: "v1",
  resource: "namespaces",
  namespaced: false,
};

export function poolWriter(client: KubeClient): PoolWriter {
  const patch = (b: EipBinding, pool: string, address: string) => {
    const finalizers = b.metadata.finalizers ?? [];
    return client.patch<EipBinding>(
      EIPBINDINGS,
      b.metadata.namespace,
      b.metadata.name,
      {
        metadata: {
          resourceVersion: b.metadata.resourceVersion,
          annotations: { [ALLOCATED_FROM]: pool },
          // Our finalizer in the same write, when the reconciler has not written it yet.
          ...(finalizers.includes(FINALIZER) ? {} : { finalizers: [...finalizers, FINALIZER] }),
        },
        spec: { eipAddr: address },
      },
      { type: "merge" },
    );
  };
  return {
    async allocate(binding, pool, address) {
      try {
        return await patch(binding, pool, address);
      } catch (err) {
        if (!isConflict(err)) throw err;
        // The object changed since the cache saw it: allocate on the fresh object if what
        // the allocation was decided on is unchanged, else decide again.
        const fresh = await client.get<EipBinding>(
          EIPBINDINGS,
          binding.metadata.namespace,
          binding.metadata.name,
        );
        if (
          fresh.metadata.uid !== binding.metadata.uid ||
          fresh.spec.eipAddr ||
          fresh.spec.poolName !== binding.spec.poolName ||
          fresh.metadata.deletionTimestamp
        ) {
          throw err;
        }
        return await patch(fresh, pool, address);
      }
    },
    async patchPoolStatus(pool, status) {
      await client.patch(
        EIPPOOLS,
        undefined,
        pool.metadata.name,
        { status },
        {
          type: "merge",
          subresource: "status",
        },
      );
    },
  };
}
