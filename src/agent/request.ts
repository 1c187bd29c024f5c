// The edge of the agent: a raw EipOperate request becomes a validated operation or a
// refusal with a reason. Nothing past this file sees a raw request.
//
// What an address may be (checked on bind, before anything changes):
// - an EIP is inside --eip-cidr, and is not the gateway, the EIP network's own network or
//   broadcast address (prefixes up to /30), a special address (src/common/special-addresses.ts) or inside an
//   --internal-net: binding one of those would take the public gateway or a whole segment
//   over, or NAT the cluster's own traffic;
// - a VMI address is inside an --internal-net, outside --eip-cidr, not the network or
//   broadcast address of its internal net and not special.
// Unbind is checked only for being two IPv4 addresses (see parseRequest).
//
// Everything a caller sent is echoed (in a reason, a log line) only cut to SHOWN_MAX
// characters: a 1 MiB eipAddr must cost neither a 1 MiB reply nor a 1 MiB log line.
import {
  type Ipv4Net,
  canonicalIpv4,
  formatIpv4Net,
  netContains,
  parseIpv4,
} from "../common/ipv4.js";
import { specialOf } from "../common/special-addresses.js";
import type { Binding } from "../model/desired.js";

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
  /** At least one (the agent refuses to start without). */
  readonly internalNets: readonly Ipv4Net[];
  readonly gatewayIp: string;
}

/** The longest piece of a caller's input echoed in a reply or a log line. */
export const SHOWN_MAX = 64;

/** Input as it may be shown: JSON-quoted, cut to SHOWN_MAX characters. */
export function shown(text: string): string {
  if (text.length <= SHOWN_MAX) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, SHOWN_MAX))}... (${text.length} characters)`;
}

function refuse(reason: string): Parsed {
  return { ok: false, reason };
}

/** The network and broadcast addresses of a net that has them (up to /30). */
function edgeOf(net: Ipv4Net, addr: number): "network" | "broadcast" | undefined {
  if (net.prefix > 30) return undefined;
  if (addr === net.base) return "network";
  if (addr === net.base + 2 ** (32 - net.prefix) - 1) return "broadcast";
  return undefined;
}

function checkEip(eip: string, value: number, policy: RequestPolicy): string | undefined {
  const cidr = formatIpv4Net(policy.eipCidr);
  const special = specialOf(value);
  if (special) return `EIP ${eip} is ${special}`;
  if (!netContains(policy.eipCidr, value)) return `EIP ${eip} is outside the EIP network ${cidr}`;
  if (eip === policy.gatewayIp) return `EIP ${eip} is the public gateway (--gateway-ip)`;
  const edge = edgeOf(policy.eipCidr, value);
  if (edge) return `EIP ${eip} is the ${edge} address of the EIP network ${cidr}`;
  const internal = policy.internalNets.find((n) => netContains(n, value));
  if (internal) return `EIP ${eip} is inside the internal network ${formatIpv4Net(internal)}`;
  return undefined;
}

function checkVmi(vmi: string, value: number, policy: RequestPolicy): string | undefined {
  const special = specialOf(value);
  if (special) return `VMI address ${vmi} is ${special}`;
  if (netContains(policy.eipCidr, value)) {
    return `VMI address ${vmi} is inside the EIP network ${formatIpv4Net(policy.eipCidr)}`;
  }
  const internal = policy.internalNets.find((n) => netContains(n, value));
  if (!internal) {
    const nets = policy.internalNets.map(formatIpv4Net).join(", ");
    return `VMI address ${vmi} is in none of the internal networks (${nets})`;
  }
  const edge = edgeOf(internal, value);
  if (edge) {
    return `VMI address ${vmi} is the ${edge} address of the internal network ${formatIpv4Net(internal)}`;
  }
  return undefined;
}

/**
 * Checks a request against the agent's configuration. Unbind only needs two addresses:
 * a binding made under an older configuration (another --eip-cidr, fewer checks) must
 * always be removable, and an unbind can only remove what the table holds.
 */
export function parseRequest(raw: RawRequest, policy: RequestPolicy): Parsed {
  const action = raw.action;
  if (action !== "bind" && action !== "unbind") {
    return refuse(`unknown action ${shown(action)}: use "bind" or "unbind"`);
  }
  const eipValue = parseIpv4(raw.eipAddr);
  if (eipValue === undefined) return refuse(`EIP ${shown(raw.eipAddr)} is not an IPv4 address`);
  const vmiValue = parseIpv4(raw.vmiAddr);
  if (vmiValue === undefined) {
    return refuse(`VMI address ${shown(raw.vmiAddr)} is not an IPv4 address`);
  }
  const eip = canonicalIpv4(raw.eipAddr) as string;
  const vmi = canonicalIpv4(raw.vmiAddr) as string;
  if (action === "bind") {
    const reason = checkEip(eip, eipValue, policy) ?? checkVmi(vmi, vmiValue, policy);
    if (reason !== undefined) return refuse(reason);
  }
  return { ok: true, op: { action, binding: { eip, vmi } } };
}
