// kube-eip-lab: builds, inspects and removes labs from the command line. `up` leaves the lab
// running with its state in /tmp/<prefix>/lab.json, which every other command reads.
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import {
  cleanup,
  DEFAULT_PREFIX_BASE,
  DEFAULT_RUN_ROOT,
  findRunDirs,
  Lab,
  readStateFile,
  removeLab,
  STATE_FILE,
  type LabDescription,
} from "./lab.js";
import { startBgpRouter } from "./bgp-router.js";
import { CLUSTER_FILE, startLabCluster, type LabCluster } from "./cluster.js";
import { listNamespaces, processAlive } from "./netns.js";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { withVersion } from "../common/version.js";

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

function positiveInt(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

interface VmiSpec {
  readonly name: string;
  readonly node: number;
  readonly address?: string;
}

function vmiSpec(text: string, previous: VmiSpec[] = []): VmiSpec[] {
  const [name, node, address] = text.split(":");
  if (!name || !node || !/^\d+$/.test(node)) {
    throw new InvalidArgumentError("expected NAME:NODE or NAME:NODE:ADDRESS");
  }
  return [...previous, { name, node: Number(node), address }];
}

export function summary(d: LabDescription): string {
  const lines = [
    `lab ${d.prefix}  (run dir ${d.runDir})`,
    `  switch   ${d.switch.namespace}: ${d.switch.publicBridge} = ${d.publicNet}, ${d.switch.mgmtBridge} = ${d.mgmtNet}`,
    `  router   ${d.router.namespace}: ${d.router.publicDevice} ${d.router.publicCidr}, ${d.router.mgmtDevice} ${d.router.mgmtCidr}, ${d.router.extDevice} ${d.router.extCidr}`,
    `  outside  ${d.outside.namespace}: ${d.outside.device} ${d.outside.cidr} via ${d.outside.gateway}`,
    ...d.nodes.map(
      (n) =>
        `  ${n.name.padEnd(8)} ${n.namespace}: ${n.mgmtDevice} ${n.mgmtCidr}, ${n.gatewayDevice} ${n.gatewayMac} (gateway device), ${n.bridge} ${n.bridgeAddress} pods ${n.podCidr}, iptables-${n.iptablesMode}`,
    ),
    `  ${d.pod.name.padEnd(8)} ${d.pod.namespace}: ${d.pod.address} on node${d.pod.node}; service ${d.serviceAddress} -> ${d.pod.address}`,
    ...d.vmis.map(
      (v) => `  vmi ${v.name}  ${v.namespace}: ${v.address} on node${v.node} (${v.hostVeth})`,
    ),
    ...d.processes.map((p) => `  pid ${p.pid}  ${p.name} in ${p.namespace}  log ${p.logFile}`),
  ];
  return lines.join("\n") + "\n";
}

/** How to reach a lab's cluster, for people: kubectl, the kubeconfig, the nodes' agents. */
export function clusterSummary(cluster: LabCluster): string {
  const pids = cluster.controlPlane.pids();
  const nodes = Array.from({ length: cluster.lab.nodeCount }, (_, k) => k + 1);
  return (
    [
      `cluster: Kubernetes ${cluster.controlPlane.binaries.version}, apiserver ${cluster.server} in ${cluster.routerNamespace} (up in ${cluster.startup.totalMs} ms; pids: etcd ${pids.etcd}, kube-apiserver ${pids.apiServer})`,
      `  kubeconfig  ${cluster.kubeconfig}   (admin; reachable from the router and every node)`,
      `  kubectl     ${cluster.kubectlCommand(["get", "nodes,vmis", "-A", "-o", "wide"]).join(" ")}`,
      ...nodes.map(
        (i) =>
          `  ${cluster.nodeName(i).padEnd(8)} InternalIP ${cluster.nodeAddress(i)}, agent at ${cluster.nodeAgentAddress(i)}`,
      ),
      `  an operator runs in ${cluster.routerNamespace} with KUBECONFIG=${cluster.kubeconfig}`,
    ].join("\n") + "\n"
  );
}

/** The cluster a lab's run dir describes (cluster.json), for status. */
function clusterFileSummary(d: LabDescription): string {
  const file = join(d.runDir, "cluster", CLUSTER_FILE);
  if (!existsSync(file)) return "";
  try {
    const c = JSON.parse(readFileSync(file, "utf8")) as { server?: string; kubeconfig?: string };
    return `  cluster  apiserver ${c.server} (in the router), kubeconfig ${c.kubeconfig}\n`;
  } catch {
    return "";
  }
}

function print(io: Io, json: boolean, value: unknown, text: string): void {
  io.out(json ? JSON.stringify(value, null, 2) + "\n" : text);
}

export function labCommand(io: Io): Command {
  const program = withVersion(new Command("kube-eip-lab"))
    .description(
      "A kube-eip site in network namespaces on this host: switch, router, outside host, nodes, a pod, VMIs",
    )
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });

  program
    .command("up")
    .description("build a lab and leave it running (state in /tmp/<prefix>/lab.json)")
    .option("--nodes <n>", "number of nodes", positiveInt, 2)
    .option("--prefix <prefix>", "prefix of every name (default keip-<6 hex>)")
    .addOption(
      new Option("--iptables <mode>", "iptables backend of the nodes (mixed: odd legacy, even nft)")
        .choices(["legacy", "nft", "mixed"])
        .default("nft"),
    )
    .option("--vmi <name:node[:address]>", "add a VMI (repeatable)", vmiSpec)
    .option("--no-bgp", "no BGP daemon (BIRD 2) on the router")
    .option(
      "--cluster",
      "also a Kubernetes control plane in the router namespace with the lab's nodes as Node objects " +
        "(--vmi then makes VMI objects too); stays in the foreground until Ctrl-C, which removes the lab",
    )
    .option("--json", "print the description as JSON")
    .action(
      async (opts: {
        nodes: number;
        prefix?: string;
        iptables: "legacy" | "nft" | "mixed";
        vmi?: VmiSpec[];
        bgp: boolean;
        cluster?: boolean;
        json?: boolean;
      }) => {
        const started = Date.now();
        // Handlers while building (Ctrl-C during up removes what exists), then the lab stays.
        const lab = await Lab.up({
          nodes: opts.nodes,
          prefix: opts.prefix,
          iptablesModes: opts.iptables,
          removeOnExit: true,
        });
        let bgp = "";
        let cluster: LabCluster | undefined;
        try {
          if (opts.cluster) cluster = await startLabCluster(lab);
          for (const v of opts.vmi ?? []) {
            if (cluster) await cluster.createVmi(v.name, v.node, { address: v.address });
            else await lab.addVmi(v.name, v.node, v.address);
          }
          if (opts.bgp) {
            const router = await startBgpRouter(lab);
            bgp =
              `BGP: BIRD 2 on the router, AS ${router.asn}, expects each node's agent as AS ${router.nodeAsn}:\n` +
              `  eip_agent ... ${router.agentArgs(1).join(" ")}   (node 1)\n`;
          }
        } catch (err) {
          await lab.down();
          throw err;
        }
        const d = lab.describe();
        if (!cluster) {
          lab.removeOnExit()();
          print(io, opts.json ?? false, d, summary(d) + bgp + `up in ${Date.now() - started} ms\n`);
          return;
        }
        // The control plane's processes are this process's children: it stays, and the lab's
        // exit handlers (still installed) remove the lab, the cluster first, on Ctrl-C.
        const c = cluster;
        print(
          io,
          opts.json ?? false,
          { ...d, cluster: JSON.parse(readFileSync(join(c.dir, CLUSTER_FILE), "utf8")) as unknown },
          summary(d) +
            bgp +
            clusterSummary(c) +
            `up in ${Date.now() - started} ms; running until Ctrl-C (which removes the lab)\n`,
        );
        // Until Ctrl-C (the handlers exit), or until the apiserver is gone some other way.
        await new Promise<void>((resolve) => {
          const timer = setInterval(() => {
            if (lab.active && c.controlPlane.pids().apiServer === undefined) {
              clearInterval(timer);
              resolve();
            }
          }, 1000);
        });
        await lab.down({ keepRunDir: true });
        const logs = existsSync(c.dir)
          ? `; lab removed, logs kept in ${join(c.dir, "logs")} (kube-eip-lab down --prefix ${lab.prefix} removes them)`
          : " (the lab was removed from elsewhere)";
        throw new Error(`the cluster's kube-apiserver exited${logs}`);
      },
    );

  program
    .command("down")
    .description("remove a lab: its processes, namespaces, /etc/netns entries and run directory")
    .requiredOption("--prefix <prefix>", "the lab's prefix")
    .option("--keep-logs", "keep the run directory")
    .action(async (opts: { prefix: string; keepLogs?: boolean }) => {
      const started = Date.now();
      if (readStateFile(join(DEFAULT_RUN_ROOT, opts.prefix, STATE_FILE))) {
        const lab = await Lab.attach(opts.prefix, { keepRunDir: opts.keepLogs ?? false });
        await lab.down();
        io.out(`lab ${opts.prefix} removed in ${Date.now() - started} ms\n`);
      } else {
        const report = await removeLab(opts.prefix);
        io.out(
          `no state for ${opts.prefix}; removed ${report.namespaces.length} namespaces, ${report.etcDirs.length} /etc/netns entries\n`,
        );
      }
    });

  program
    .command("cleanup")
    .description("remove the leftovers of every lab whose names start with the prefix")
    .option("--prefix <prefix>", "name prefix", DEFAULT_PREFIX_BASE)
    .option(
      "--stale",
      "only labs left behind: built to be removed on exit by a process that is gone",
    )
    .option("--json", "print what was removed as JSON")
    .action(async (opts: { prefix: string; stale?: boolean; json?: boolean }) => {
      const report = await cleanup({ prefix: opts.prefix, staleOnly: opts.stale ?? false });
      print(
        io,
        opts.json ?? false,
        report,
        [
          `namespaces removed: ${report.namespaces.join(" ") || "none"}`,
          `/etc/netns entries removed: ${report.etcDirs.join(" ") || "none"}`,
          `run directories removed: ${report.runDirs.join(" ") || "none"}`,
        ].join("\n") + "\n",
      );
    });

  program
    .command("status")
    .description("show labs (all, or the one with --prefix) and whether their namespaces exist")
    .option("--prefix <prefix>", "the lab's prefix (default: every lab in /tmp)")
    .option("--json", "print JSON")
    .action((opts: { prefix?: string; json?: boolean }) => {
      const existing = new Set(listNamespaces());
      const labs = opts.prefix
        ? [readStateFile(join(DEFAULT_RUN_ROOT, opts.prefix, STATE_FILE))].filter(
            (d): d is LabDescription => d !== undefined,
          )
        : findRunDirs("").map((f) => f.state);
      if (opts.prefix && labs.length === 0) {
        throw new Error(`no lab state for ${opts.prefix} in ${DEFAULT_RUN_ROOT}`);
      }
      const status = labs.map((d) => {
        const all = [
          d.namespaces.switch,
          d.namespaces.router,
          d.namespaces.outside,
          d.namespaces.pod,
          ...d.namespaces.nodes,
          ...d.namespaces.vmis,
        ];
        return {
          description: d,
          missingNamespaces: all.filter((ns) => !existing.has(ns)),
          livePids: d.pids.filter(processAlive),
        };
      });
      const orphans = [...existing].filter(
        (ns) =>
          ns.startsWith(DEFAULT_PREFIX_BASE) &&
          !labs.some((d) => ns.startsWith(`${d.prefix}-`)) &&
          (!opts.prefix || ns.startsWith(opts.prefix)),
      );
      const text =
        status
          .map(
            (s) =>
              summary(s.description) +
              clusterFileSummary(s.description) +
              (s.missingNamespaces.length === 0
                ? "  all namespaces present\n"
                : `  MISSING namespaces: ${s.missingNamespaces.join(" ")}\n`),
          )
          .join("\n") +
        (status.length === 0 ? "no labs\n" : "") +
        (orphans.length > 0 ? `namespaces without lab state: ${orphans.join(" ")}\n` : "");
      print(io, opts.json ?? false, { labs: status, namespacesWithoutState: orphans }, text);
    });

  const vmi = program.command("vmi").description("add, move or remove VMIs of a running lab");
  vmi
    .command("add <name>")
    .requiredOption("--prefix <prefix>", "the lab's prefix")
    .requiredOption("--node <n>", "node index (1-based)", positiveInt)
    .option("--address <ip>", "address in the node's pod /24 (default: next free from .10)")
    .option("--json", "print the VMI as JSON")
    .action(
      async (
        name: string,
        opts: { prefix: string; node: number; address?: string; json?: boolean },
      ) => {
        const lab = await Lab.attach(opts.prefix);
        const info = await lab.addVmi(name, opts.node, opts.address);
        print(
          io,
          opts.json ?? false,
          info,
          `${info.namespace} ${info.address} on node${info.node}\n`,
        );
      },
    );
  vmi
    .command("move <name>")
    .requiredOption("--prefix <prefix>", "the lab's prefix")
    .requiredOption("--node <n>", "target node index (1-based)", positiveInt)
    .option("--address <ip>", "new address (default: next free on the target node)")
    .action(async (name: string, opts: { prefix: string; node: number; address?: string }) => {
      const lab = await Lab.attach(opts.prefix);
      const address = await lab.moveVmi(name, opts.node, opts.address);
      io.out(`${name} now ${address} on node${opts.node}\n`);
    });
  vmi
    .command("migrate <name>")
    .description("move to another node keeping the address (a CNI that keeps VM addresses)")
    .requiredOption("--prefix <prefix>", "the lab's prefix")
    .requiredOption("--node <n>", "target node index (1-based)", positiveInt)
    .action(async (name: string, opts: { prefix: string; node: number }) => {
      const lab = await Lab.attach(opts.prefix);
      await lab.migrateVmi(name, opts.node);
      io.out(`${name} now ${lab.vmi(name).address} on node${opts.node}\n`);
    });
  vmi
    .command("rm <name>")
    .requiredOption("--prefix <prefix>", "the lab's prefix")
    .action(async (name: string, opts: { prefix: string }) => {
      const lab = await Lab.attach(opts.prefix);
      await lab.removeVmi(name);
      io.out(`${name} removed\n`);
    });

  return program;
}

/** Runs the command; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runLab(argv: readonly string[], io: Io): Promise<number> {
  const program = labCommand(io);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    io.err(`kube-eip-lab: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
