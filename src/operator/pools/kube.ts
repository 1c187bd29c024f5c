// The pools' side of the API: the resources they read and their writes.
import { EIPBINDINGS, type KubeClient, type ResourceRef, isConflict } from "../../kube/client.js";
import type { EipBinding } from "../types.js";
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
  const patch = (b: EipBinding, pool: string, address: string) =>
    client.patch(
      EIPBINDINGS,
      b.metadata.namespace,
      b.metadata.name,
      {
        metadata: {
          resourceVersion: b.metadata.resourceVersion,
          annotations: { [ALLOCATED_FROM]: pool },
        },
        spec: { eipAddr: address },
      },
      { type: "merge" },
    );
  return {
    async allocate(binding, pool, address) {
      try {
        await patch(binding, pool, address);
      } catch (err) {
        if (!isConflict(err)) throw err;
        // Often only our own finalizer write, not yet in the cache: allocate on the fresh
        // object if what the allocation was decided on is unchanged, else decide again.
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
        await patch(fresh, pool, address);
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
