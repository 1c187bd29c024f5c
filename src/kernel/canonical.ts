// Canonical IPv4 spelling on the hot path of the managers' diffs. With 10,000 bindings every
// apply canonicalises tens of thousands of addresses that plan.ts already wrote canonically;
// recognising those with one regex test is several times cheaper than parsing and
// re-formatting each one.
import { canonicalIpv4 } from "../common/ipv4.js";

const OCTET = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
/** Exactly the strings formatIpv4 produces (no leading zeros, four octets in range). */
const CANONICAL = new RegExp(`^(?:${OCTET}\\.){3}${OCTET}$`);

/** Same result as canonicalIpv4(text), faster when text is already canonical. */
export function canonicalAddress(text: string): string | undefined {
  return CANONICAL.test(text) ? text : canonicalIpv4(text);
}
