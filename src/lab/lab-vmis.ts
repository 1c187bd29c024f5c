// The lab's VMIs: a namespace each, its eth0 plugged into a node's cni0, with an address
// from the node's pod /24. Added, moved to another node (a new address) or migrated (the
// same address), and removed; the records (name, node, address, serial for the MAC) are what
// lab.json keeps of them.
//
// A migration keeping the address does what a CNI that keeps VM addresses across nodes does
// (Calico's way): the guest is not touched (its eth0, address, routes and the neighbour
// entry of its gateway stay); the host end of its veth moves to the new node, where it is a
// routed interface instead of a cni0 port: the MAC of the guest's gateway (its home node's
// cni0), proxy ARP (so the guest's ARP for its gateway is answered), a /32 route and a
// permanent neighbour entry for the guest. Every other node routes the /32 to the new node's
// management address. Back on its home node, the host end is a cni0 port again and the /32
// routes go. One difference from a real migration: the guest's link goes down while the host
// end moves. Were that seen (the kernel handles a carrier change a moment later), the
// guest's neighbour entries would be flushed and the ARP request for its gateway sent while
// the link is down lost, the next one a second later (retrans_time): the host end comes up
// on the new node in the same command that moves it, so the guest's link is not seen down
// (src/lab/migrate.privileged.test.ts: stalls of 0-0.4 s, not 1 s).

import { isIpv4 } from "../common/ipv4.js";
import type { CommandRunner } from "../kernel/runner.js";
import { listNamespaces, removeNamespaces } from "./netns.js";
import {
  checkVmiName,
  DEVICES,
  guestLines,
  MACS,
  plugVmiLine,
  vmiHostVeth,
  type Addressing,
  type LabNames,
} from "./topology.js";
import { ipBatch } from "./lab-build.js";
import type { VmiInfo, VmiRecord } from "./lab-types.js";

/** What the VMIs need of their lab. */
export interface VmiHost {
  readonly prefix: string;
  readonly runner: CommandRunner;
  readonly names: LabNames;
  readonly addressing: Addressing;
  readonly firstVmiHost: number;
  readonly nodeCount: number;
  readonly podNode: number;
  readonly podAddress: string;
  /** The lab's owned namespaces: a VMI's is added and deleted with it. */
  readonly owned: Set<string>;
  checkUp(): void;
  checkNode(i: number): void;
  /** Stops the lab's processes in a namespace. */
  stopProcessesIn(ns: string): Promise<void>;
  saveState(): void;
}

export class LabVmis {
  private readonly records = new Map<string, VmiRecord>();
  private serial = 1;

  constructor(private readonly host: VmiHost) {}

  /** Takes over the VMIs of an attached lab's lab.json. */
  restore(records: readonly VmiRecord[], nextSerial: number): void {
    for (const v of records) {
      this.records.set(v.name, {
        name: v.name,
        node: v.node,
        address: v.address,
        serial: v.serial,
      });
      this.host.owned.add(this.host.names.vmi(v.name));
    }
    this.serial = nextSerial;
  }

  /** Next VMI serial (MAC addresses). */
  get nextSerial(): number {
    return this.serial;
  }

  namespaces(): string[] {
    return [...this.records.keys()].map(this.host.names.vmi);
  }

  namespace(name: string): string {
    return this.host.names.vmi(this.record(name).name);
  }

  info(name: string): VmiInfo {
    return this.toInfo(this.record(name));
  }

  list(): VmiInfo[] {
    return [...this.records.values()].map((rec) => this.toInfo(rec));
  }

  private record(name: string): VmiRecord {
    const rec = this.records.get(name);
    if (!rec) throw new Error(`no VMI ${JSON.stringify(name)} in lab ${this.host.prefix}`);
    return rec;
  }

  private toInfo(rec: VmiRecord): VmiInfo {
    return {
      name: rec.name,
      namespace: this.host.names.vmi(rec.name),
      node: rec.node,
      nodeNamespace: this.host.names.node(rec.node),
      address: rec.address,
      mac: MACS.vmi(rec.serial),
      hostVeth: vmiHostVeth(rec.name),
      serial: rec.serial,
    };
  }

  /** Addresses taken in the node's /24 (or anywhere: an address is unique in the lab). */
  private usedAddresses(node: number): Set<string> {
    const used = new Set<string>([this.host.addressing.nodeBridge(node)]);
    if (node === this.host.podNode) used.add(this.host.podAddress);
    // Every VMI's: a migrated one keeps its home node's address on another node.
    for (const rec of this.records.values()) used.add(rec.address);
    return used;
  }

  /** The node whose pod /24 holds the VMI's address: where it is a port of cni0. */
  private home(rec: VmiRecord): number {
    const home = this.host.addressing.nodeOfPodAddress(rec.address, this.host.nodeCount);
    if (home === undefined) throw new Error(`VMI ${rec.name}'s ${rec.address} is in no node's /24`);
    return home;
  }

  /** The nodes other than `except`. */
  private nodesBut(...except: number[]): number[] {
    const all = Array.from({ length: this.host.nodeCount }, (_, k) => k + 1);
    return all.filter((k) => !except.includes(k));
  }

  /**
   * A VMI away from its home node: the other nodes' /32 routes to it go (its own node's went
   * with the host end). Best effort, for a VMI that leaves or gets a new address.
   */
  private async dropAwayRoutes(rec: VmiRecord): Promise<void> {
    if (rec.node === this.home(rec)) return;
    const { runner, names } = this.host;
    await Promise.all(
      this.nodesBut(rec.node).map((k) =>
        ipBatch(runner, names.node(k), [`route del ${rec.address}/32`]).catch(() => {}),
      ),
    );
  }

  private pickAddress(node: number, requested: string | undefined): string {
    const addressing = this.host.addressing;
    const used = this.usedAddresses(node);
    if (requested !== undefined) {
      if (
        !isIpv4(requested) ||
        addressing.nodeOfPodAddress(requested, this.host.nodeCount) !== node
      ) {
        throw new Error(
          `${requested} is not an address in node ${node}'s ${addressing.podCidr(node)}`,
        );
      }
      const host = Number(requested.split(".")[3]);
      if (host === 0 || host === 255 || used.has(requested)) {
        throw new Error(`${requested} is not free on node ${node}`);
      }
      return requested;
    }
    for (let host = this.host.firstVmiHost; host < 255; host++) {
      const address = addressing.podAddress(node, host);
      if (!used.has(address)) return address;
    }
    throw new Error(`no free VMI address left on node ${node}`);
  }

  async add(name: string, node: number, address?: string): Promise<VmiInfo> {
    const { runner, names, addressing, owned } = this.host;
    this.host.checkUp();
    checkVmiName(name);
    this.host.checkNode(node);
    if (this.records.has(name)) throw new Error(`VMI ${name} exists`);
    const ns = names.vmi(name);
    if (listNamespaces().includes(ns)) throw new Error(`namespace ${ns} already exists`);
    const rec: VmiRecord = {
      name,
      node,
      address: this.pickAddress(node, address),
      serial: this.serial++,
    };
    this.records.set(name, rec); // reserves the name and address before anything is awaited
    owned.add(ns);
    try {
      await runner.run("ip", ["netns", "add", ns]);
      await ipBatch(runner, names.node(node), [plugVmiLine(name, rec.serial, ns)]);
      await ipBatch(runner, ns, guestLines(rec.address, addressing.nodeBridge(node)));
    } catch (err) {
      this.records.delete(name);
      await removeNamespaces(runner, [ns]).catch(() => {});
      owned.delete(ns);
      throw err;
    }
    this.host.saveState();
    return this.toInfo(rec);
  }

  async move(name: string, toNode: number, newAddress?: string): Promise<string> {
    const { runner, names, addressing } = this.host;
    this.host.checkUp();
    const rec = this.record(name);
    this.host.checkNode(toNode);
    if (rec.node === toNode) throw new Error(`VMI ${name} is already on node ${toNode}`);
    const address = this.pickAddress(toNode, newAddress);
    const ns = names.vmi(name);
    await ipBatch(runner, ns, [`link del ${DEVICES.guest}`]);
    await this.dropAwayRoutes(rec);
    rec.node = toNode;
    rec.address = address;
    await ipBatch(runner, names.node(toNode), [plugVmiLine(name, rec.serial, ns)]);
    await ipBatch(runner, ns, guestLines(address, addressing.nodeBridge(toNode)));
    // As QEMU does after a migration, the guest announces itself, so the new node's
    // neighbour entry for a reused address does not keep the previous guest's MAC. In the
    // background: arping waits a second after sending.
    void runner
      .run("ip", ["netns", "exec", ns, "arping", "-U", "-c", "1", "-I", DEVICES.guest, address])
      .catch(() => {});
    this.host.saveState();
    return address;
  }

  async migrate(name: string, toNode: number): Promise<void> {
    const { runner, names, addressing } = this.host;
    this.host.checkUp();
    const rec = this.record(name);
    this.host.checkNode(toNode);
    if (rec.node === toNode) throw new Error(`VMI ${name} is already on node ${toNode}`);
    const home = this.home(rec);
    const from = rec.node;
    const veth = vmiHostVeth(name);
    const to = names.node(toNode);
    const address = rec.address;
    // One command moves the host end and brings it up on the new node with the MAC the
    // guest knows for its gateway: the guest's link is down for so short a time that its
    // neighbour entries are not flushed (see the header).
    const mac = toNode === home ? MACS.vmiHost(rec.serial) : MACS.nodeBridge(home);
    await ipBatch(runner, names.node(from), [`link set ${veth} netns ${to} address ${mac} up`]);
    // The host end is on the new node from here on (its routes on the old one went with it).
    rec.node = toNode;
    try {
      if (toNode === home) {
        await ipBatch(runner, to, [
          `route del ${address}/32`,
          `link set ${veth} master ${DEVICES.nodeBridge}`,
        ]);
      } else {
        await ipBatch(runner, to, [
          `route replace ${address}/32 dev ${veth}`,
          `neigh replace ${address} lladdr ${MACS.vmi(rec.serial)} dev ${veth} nud permanent`,
        ]);
        // Per-device settings start from the namespace's defaults after a move.
        await runner.run("ip", [
          "netns",
          "exec",
          to,
          "sysctl",
          "-q",
          "-w",
          `net.ipv4.conf.${veth}.proxy_arp=1`,
          `net.ipv4.neigh.${veth}.proxy_delay=0`,
        ]);
      }
      // The rest of the cluster: the old node's routes were via the host end, which left.
      const others = toNode === home ? this.nodesBut(toNode, from) : this.nodesBut(toNode);
      const line =
        toNode === home
          ? `route del ${address}/32`
          : `route replace ${address}/32 via ${addressing.nodeMgmt(toNode)} dev ${DEVICES.nodeMgmt}`;
      await Promise.all(others.map((k) => ipBatch(runner, names.node(k), [line])));
    } finally {
      this.host.saveState();
    }
  }

  async remove(name: string): Promise<void> {
    const { runner, names, owned } = this.host;
    this.host.checkUp();
    const rec = this.record(name);
    const ns = names.vmi(name);
    await this.host.stopProcessesIn(ns);
    await removeNamespaces(runner, [ns]);
    await this.dropAwayRoutes(rec);
    this.records.delete(name);
    owned.delete(ns);
    this.host.saveState();
  }
}
