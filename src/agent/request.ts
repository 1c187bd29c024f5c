// The edge of the agent: a raw EipOperate request becomes a validated operation or a
// refusal with a reason. Nothing past this file sees a raw request.
import {
  type Ipv4Net,
  canonicalIpv4,
  formatIpv4Net,
  netContains,
  parseIpv4,
} from "../common/ipv4.js";
import type { Binding } from "./plan.js";

export interface RawRequest {
  readonly action: string;
  readonly eipAddr: string;
  readonly vmiAddr: string;
}

export type Operation = { readonly action: "bind" | "unbind"; readonly binding: Binding };

export type Parsed =
  { readonly ok: true; readonly op: Operation } | { readonly ok: false; readonly reason: string };

export interface RequestPolicy {
  readonly eipCidr: Ipv4Net;
  /** Empty: any VMI address is accepted. */
  readonly internalNets: readonly Ipv4Net[];
}

function refuse(reason: string): Parsed {
  return { ok: false, reason };
}

/**
 * Checks a request against the agent's configuration. Unbind only needs two addresses:
 * a binding made under an older configuration must always be removable.
 */
export function parseRequest(raw: RawRequest, policy: RequestPolicy): Parsed {
  const action = raw.action;
  if (action !== "bind" && action !== "unbind") {
    return refuse(`unknown action ${JSON.stringify(action)}: use "bind" or "unbind"`);
  }
  const eip = canonicalIpv4(raw.eipAddr);
  if (eip === undefined) return refuse(`EIP ${JSON.stringify(raw.eipAddr)} is not an IPv4 address`);
  const vmi = canonicalIpv4(raw.vmiAddr);
  if (vmi === undefined) {
    return refuse(`VMI address ${JSON.stringify(raw.vmiAddr)} is not an IPv4 address`);
  }
  if (action === "bind") {
    if (!netContains(policy.eipCidr, parseIpv4(eip) ?? 0)) {
      return refuse(`EIP ${eip} is outside the EIP network ${formatIpv4Net(policy.eipCidr)}`);
    }
    const vmiValue = parseIpv4(vmi) ?? 0;
    if (netContains(policy.eipCidr, vmiValue)) {
      return refuse(
        `VMI address ${vmi} is inside the EIP network ${formatIpv4Net(policy.eipCidr)}`,
      );
    }
    if (
      policy.internalNets.length > 0 &&
      !policy.internalNets.some((n) => netContains(n, vmiValue))
    ) {
      const nets = policy.internalNets.map(formatIpv4Net).join(", ");
      return refuse(`VMI address ${vmi} is in none of the internal networks (${nets})`);
    }
  }
  return { ok: true, op: { action, binding: { eip, vmi } } };
}
