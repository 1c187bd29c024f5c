// The lab's VMIs: a namespace each, its eth0 plugged into a node's cni0, with an address
// from the node's pod /24. Added, moved to another node and removed; the records (name,
// node, address, serial for the MAC) are what lab.json keeps of them.

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

  private usedAddresses(node: number): Set<string> {
    const used = new Set<string>([this.host.addressing.nodeBridge(node)]);
    if (node === this.host.podNode) used.add(this.host.podAddress);
    for (const rec of this.records.values()) if (rec.node === node) used.add(rec.address);
    return used;
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
    rec.node = toNode;
    rec.address = address;
    const ns = names.vmi(name);
    await ipBatch(runner, ns, [`link del ${DEVICES.guest}`]);
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

  async remove(name: string): Promise<void> {
    const { runner, names, owned } = this.host;
    this.host.checkUp();
    this.record(name);
    const ns = names.vmi(name);
    await this.host.stopProcessesIn(ns);
    await removeNamespaces(runner, [ns]);
    this.records.delete(name);
    owned.delete(ns);
    this.host.saveState();
  }
}
