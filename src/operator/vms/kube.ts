// The vm-bindings' side of the API: the VirtualMachines it reads, the EipBindings it
// creates and deletes.
import {
  EIPBINDINGS,
  type KubeClient,
  type ResourceRef,
  isAlreadyExists,
  isConflict,
  isNotFound,
} from "../../kube/client.js";
import type { VmBindingWriter } from "./controller.js";

export const VIRTUALMACHINES: ResourceRef = {
  group: "kubevirt.io",
  version: "v1",
  resource: "virtualmachines",
  namespaced: true,
};

export function vmBindingWriter(client: KubeClient): VmBindingWriter {
  return {
    async create(binding) {
      try {
        await client.create(EIPBINDINGS, binding.metadata.namespace, binding);
      } catch (err) {
        // Its cache event brings the name back to be planned again.
        if (!isAlreadyExists(err)) throw err;
      }
    },
    async delete(binding) {
      const { namespace, name, uid } = binding.metadata;
      if (!uid) throw new Error(`EipBinding ${namespace}/${name} has no uid: not deleted`);
      try {
        // Exactly the object planned on: a binding made anew under the name is left alone.
        await client.delete(EIPBINDINGS, namespace, name, { preconditions: { uid } });
      } catch (err) {
        if (!isNotFound(err) && !isConflict(err)) throw err;
      }
    },
  };
}
