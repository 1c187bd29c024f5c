// IPv4 addresses and networks as plain numbers, parsed strictly: "10.0.0.1" is an address,
// "010.0.0.1", "10.0.0", " 10.0.0.1" and "::1" are not. Everything past the edges of the
// program works on the canonical strings these functions return, so that two spellings of
// one address can never compare unequal.

export interface Ipv4Net {
  /** Network address as an unsigned 32-bit number (host bits cleared). */
  readonly base: number;
  readonly prefix: number;
}

/**
 * Parses a dotted-quad IPv4 address; returns undefined if it is not exactly one. By hand,
 * not by regular expression: the operator parses addresses at every reconcile (node
 * addresses, EIPs), and at 10,000 bindings the regular expression was its top cost.
 */
export function parseIpv4(text: string): number | undefined {
  let value = 0;
  let octets = 0;
  let i = 0;
  const n = text.length;
  while (octets < 4) {
    const start = i;
    let octet = 0;
    while (i < n && i - start < 4) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      octet = octet * 10 + (c - 48);
      i++;
    }
    const digits = i - start;
    // 1 to 3 digits, no leading zero ("0" alone is fine), at most 255.
    if (digits === 0 || digits > 3 || octet > 255) return undefined;
    if (digits > 1 && text.charCodeAt(start) === 48) return undefined;
    value = value * 256 + octet;
    octets++;
    if (octets < 4) {
      if (text.charCodeAt(i) !== 46) return undefined;
      i++;
    }
  }
  return i === n ? value : undefined;
}

export function isIpv4(text: string): boolean {
  return parseIpv4(text) !== undefined;
}

export function formatIpv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses "a.b.c.d/n" (or a bare address, taken as /32). Host bits must be zero unless
 * `allowHostBits` is set, in which case they are cleared.
 */
export function parseIpv4Net(
  text: string,
  options: { allowHostBits?: boolean } = {},
): Ipv4Net | undefined {
  const slash = text.indexOf("/");
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? "32" : text.slice(slash + 1);
  if (!/^(3[0-2]|[12]?\d)$/.test(prefixText)) return undefined;
  const addr = parseIpv4(addrText);
  if (addr === undefined) return undefined;
  const prefix = Number(prefixText);
  const base = (addr & mask(prefix)) >>> 0;
  if (base !== addr && !options.allowHostBits) return undefined;
  return { base, prefix };
}

export function formatIpv4Net(net: Ipv4Net): string {
  return `${formatIpv4(net.base)}/${net.prefix}`;
}

export function netContains(net: Ipv4Net, addr: number): boolean {
  return (addr & mask(net.prefix)) >>> 0 === net.base;
}

/** Canonical form of an address string, or undefined if it is not IPv4. */
export function canonicalIpv4(text: string): string | undefined {
  const value = parseIpv4(text);
  return value === undefined ? undefined : formatIpv4(value);
}
