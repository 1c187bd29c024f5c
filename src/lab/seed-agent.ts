// What the seed's Go agent did to a node, command by command, as its source shows:
// set-up once (ipsets, chains, jumps, the eip_route table with internal nets via cni0),
// then per binding `ipset add` x2, `iptables -S` then `iptables -A` for each of the two
// NAT rules, `ip rule add` and `ip addr add` with the EIP network's prefix. Used to build
// a node "upgraded from the seed" for the adoption test, and as the benchmark's baseline.

export type Exec = (argv: readonly string[]) => Promise<{ stdout: string }>;

export interface SeedNode {
  readonly iptables: string; // "iptables-legacy" or "iptables-nft"
  readonly gatewayIp: string;
  readonly gatewayDev: string;
  readonly eipCidr: string;
  readonly cniDev: string;
  readonly cniAddress: string;
  readonly internalNets: readonly string[];
}

export async function seedSetup(exec: Exec, n: SeedNode): Promise<void> {
  await exec(["ipset", "create", "k8s_internal_net", "hash:net", "-exist"]);
  for (const net of n.internalNets) await exec(["ipset", "add", "k8s_internal_net", net, "-exist"]);
  await exec(["ipset", "create", "kube-eip-eip", "hash:ip", "-exist"]);
  await exec(["ipset", "create", "kube-eip-vmi", "hash:ip", "-exist"]);
  await exec([n.iptables, "-t", "nat", "-N", "KUBE-EIP-PREROUTING"]);
  await exec([n.iptables, "-t", "nat", "-N", "KUBE-EIP-POSTROUTING"]);
  await exec([
    n.iptables,
    "-t",
    "nat",
    "-I",
    "PREROUTING",
    "1",
    "-m",
    "set",
    "--match-set",
    "kube-eip-eip",
    "dst",
    "-j",
    "KUBE-EIP-PREROUTING",
  ]);
  await exec([
    n.iptables,
    "-t",
    "nat",
    "-I",
    "POSTROUTING",
    "1",
    "-m",
    "set",
    "--match-set",
    "kube-eip-vmi",
    "src",
    "-j",
    "KUBE-EIP-POSTROUTING",
  ]);
  await exec([
    n.iptables,
    "-t",
    "filter",
    "-I",
    "FORWARD",
    "1",
    "-m",
    "set",
    "--match-set",
    "kube-eip-vmi",
    "src",
    "-j",
    "ACCEPT",
  ]);
  await exec([
    "ip",
    "route",
    "add",
    "default",
    "via",
    n.gatewayIp,
    "dev",
    n.gatewayDev,
    "onlink",
    "table",
    "1001",
  ]);
  for (const net of n.internalNets) {
    await exec(["ip", "route", "add", net, "via", n.cniAddress, "dev", n.cniDev, "table", "1001"]);
  }
}

export async function seedBind(exec: Exec, n: SeedNode, eip: string, vmi: string): Promise<void> {
  const prefix = n.eipCidr.split("/")[1] ?? "32";
  await exec(["ipset", "add", "kube-eip-eip", eip, "-exist"]);
  await exec(["ipset", "add", "kube-eip-vmi", vmi, "-exist"]);
  await exec([n.iptables, "-t", "nat", "-S", "KUBE-EIP-PREROUTING"]);
  await exec([
    n.iptables,
    "-t",
    "nat",
    "-A",
    "KUBE-EIP-PREROUTING",
    "-d",
    eip,
    "-j",
    "DNAT",
    "--to-destination",
    vmi,
  ]);
  await exec([n.iptables, "-t", "nat", "-S", "KUBE-EIP-POSTROUTING"]);
  await exec([
    n.iptables,
    "-t",
    "nat",
    "-A",
    "KUBE-EIP-POSTROUTING",
    "-s",
    vmi,
    "-m",
    "set",
    "!",
    "--match-set",
    "k8s_internal_net",
    "dst",
    "-j",
    "SNAT",
    "--to",
    eip,
  ]);
  await exec(["ip", "rule", "add", "from", vmi, "table", "1001", "priority", "1001"]);
  await exec(["ip", "addr", "add", `${eip}/${prefix}`, "dev", n.gatewayDev]);
}

/** The seed's per-binding progress file. */
export function seedMetadata(eip: string, vmi: string): { name: string; body: string } {
  return {
    name: `eip-${eip}-${vmi}.metadata`,
    body: JSON.stringify({ status: "Finished", exip: eip, inip: vmi, phase: 4 }),
  };
}
