// IPv4 ranges no EIP and no VMI address may be in, whatever the configuration: checked by the
// agent's request checks and by the operator before any agent call (the CRD says the same in
// CEL).
import { type Ipv4Net, netContains, parseIpv4Net } from "./ipv4.js";

const SPECIAL: readonly (readonly [Ipv4Net, string])[] = (
  [
    ["0.0.0.0/32", "the unspecified address"],
    ["127.0.0.0/8", "a loopback address"],
    ["169.254.0.0/16", "a link-local address"],
    ["224.0.0.0/4", "a multicast address"],
    ["255.255.255.255/32", "the limited broadcast address"],
  ] as const
).map(([net, what]) => [parseIpv4Net(net) as Ipv4Net, what] as const);

/** What the address (a parsed IPv4) is when it is in a special range; else undefined. */
export function specialOf(addr: number): string | undefined {
  return SPECIAL.find(([net]) => netContains(net, addr))?.[1];
}
