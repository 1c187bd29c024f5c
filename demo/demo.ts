// The main job, end to end on one host: the whole site in network namespaces — the EIP
// router running BIRD 2, an outside host behind it, two hypervisor nodes each with its
// eip_agent announcing by BGP, a real kube-apiserver (with etcd) and the eip-operator. A VMI
// runs on node 1; an EipBinding is applied with kubectl; the demo shows it Ready, the EIP's
// route at the router, traffic both ways, then moves the VMI to node 2 (as a live migration
// would) and shows the EIP following. Then an EipPool, and a VirtualMachine annotated
// `kube-eip.lucheng0127/eip: auto`: the operator makes its EipBinding and allocates it an
// address nobody typed, which carries traffic and stays the same across the VM's restart
// (the demo plays virt-controller). Then it keeps the site up for the reader to use
// kubectl against it until Ctrl-C (or tears it down at once with --exit).
import { performance } from "node:perf_hooks";
import { Lab } from "../src/lab/lab.js";
import { SERVICE_NET, eipctl, startAgent } from "../src/lab/agents.js";
import { startBgpRouter } from "../src/lab/bgp-router.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { startOperator } from "../src/lab/operator.js";
import { LabVms } from "../src/lab/vms.js";
import { EIP_ANNOTATION } from "../src/operator/vms/types.js";

const EIP = "192.168.18.100";
const exitAtEnd = process.argv.includes("--exit");

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

function step(text: string): void {
  say(`\n==> ${text}`);
}

function indent(text: string): string {
  return text.replace(/^/gm, "    ").trimEnd();
}

async function main(): Promise<void> {
  step("Building the site: EIP router (BIRD 2), outside host, two hypervisor nodes, a pod");
  const lab = await Lab.up({ nodes: 2, removeOnExit: true });
  const d = lab.describe();
  const outside = d.outside.namespace;
  const router = await startBgpRouter(lab);
  say(
    `    prefix ${lab.prefix}; outside host ${d.outside.address}; router ${d.router.publicAddress} (public) / ${d.router.mgmtAddress} (management), BGP AS ${router.asn}`,
  );

  step("Starting a real kube-apiserver (and etcd) in the router's namespace, with the CRDs");
  const cluster = await startLabCluster(lab);
  say(`    ${cluster.server}, up in ${(cluster.startup.totalMs / 1000).toFixed(1)} s`);
  say(indent(await cluster.kubectl(["get", "nodes", "-o", "wide"])));

  step("Starting eip_agent (--bgp-type gobgp) on both nodes and the eip-operator");
  for (const node of [1, 2]) {
    const agent = await startAgent(lab, node, {
      resyncSeconds: 10,
      extraArgs: [...router.agentArgs(node), "--bgp-listen-port", "179"],
    });
    say(`    node ${node}: agent pid ${agent.proc.pid}, log ${agent.proc.logFile}`);
  }
  // The agents' gateway address is never handed out from a pool.
  const operator = await startOperator(cluster, {
    name: "eip-operator",
    extraArgs: ["--pool-reserved", lab.topology.routerPublic],
  });
  say(`    operator pid ${operator.proc.pid}, log ${operator.proc.logFile}`);

  step('A VirtualMachineInstance "web" runs on node 1 (the demo plays virt-handler)');
  const vmi = await cluster.createVmi("web", 1);
  await lab.startTcpServer(lab.vmiNamespace("web"), 80);
  await lab.startTcpServer(outside, 8080);
  await lab.startTcpServer(lab.pod().namespace, 8080);
  say(indent(await cluster.kubectl(["get", "vmi", "-o", "wide"])));

  step(`kubectl apply: an EipBinding of ${EIP} to VMI web`);
  const applied = performance.now();
  await cluster.applyEipBinding("web", EIP, "web");

  await cluster.kubectl(["wait", "--for=condition=Ready", "eipbinding/web", "--timeout=30s"]);
  say(`    Ready ${(performance.now() - applied).toFixed(0)} ms after the apply`);
  say(indent(await cluster.kubectl(["get", "eipbinding", "-o", "wide"])));

  step("The router learned the EIP by BGP (ip route show proto bird on the router)");
  await waitFor(
    async () => (await router.kernelRoutes()).get(`${EIP}/32`) === lab.node(1).mgmtAddress,
  );
  say(
    indent((await lab.exec(d.router.namespace, ["ip", "route", "show", "proto", "bird"])).stdout),
  );

  step("Traffic from the outside host, behind the router, through the EIP, both ways");
  say(
    `    TCP to ${EIP}:80 -> the VMI saw the connection come from ${(await lab.tcpRequest(outside, EIP, 80)).trim()}`,
  );
  say(
    `    VMI -> outside ${d.outside.address}:8080: seen from ${(await lab.tcpRequest(vmi.netns ?? "", d.outside.address, 8080)).trim()}`,
  );
  say(
    `    VMI -> pod ${lab.pod().address} and service ${lab.topology.serviceAddress} (${SERVICE_NET}): seen from ${(await lab.tcpRequest(vmi.netns ?? "", lab.pod().address, 8080)).trim()} and ${(await lab.tcpRequest(vmi.netns ?? "", lab.topology.serviceAddress, 8080)).trim()} (not NATed)`,
  );

  step("Live migration: the VMI moves to node 2 with a new address; the EIP follows");
  const written = await cluster.moveVmi("web", 2);
  // A probe every 20 ms, each waiting up to a second for its answer.
  let resumed = 0;
  const probes: Promise<void>[] = [];
  while (resumed === 0 && performance.now() - written < 30_000) {
    probes.push(
      lab.tcpRequest(outside, EIP, 80, { timeoutSec: 1 }).then(
        (answer) => {
          if (answer.trim() === d.outside.address && resumed === 0) resumed = performance.now();
        },
        () => {},
      ),
    );
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(probes);
  say(
    `    traffic through ${EIP} answered from node 2 ${(resumed - written).toFixed(0)} ms after the VMI's status said so`,
  );
  await waitFor(
    async () => (await router.kernelRoutes()).get(`${EIP}/32`) === lab.node(2).mgmtAddress,
  );
  say(indent(await cluster.kubectl(["get", "eipbinding", "-o", "wide"])));
  say(
    indent((await lab.exec(d.router.namespace, ["ip", "route", "show", "proto", "bird"])).stdout),
  );
  const node1 = await eipctl(lab, 1, ["--action", "list"]);
  say(`    node 1's agent now holds:\n${indent(node1.stdout)}`);
  say(
    indent(
      await cluster.kubectl([
        "get",
        "events.events.k8s.io",
        "--field-selector",
        "regarding.name=web",
      ]),
    ),
  );

  await vmStep(lab, cluster, outside);

  step("Use it");
  say(`    ${cluster.kubectlCommand(["get", "eipbinding", "-o", "wide"]).join(" ")}`);
  say(`    ${cluster.kubectlCommand(["describe", "eipbinding", "web"]).join(" ")}`);
  say(`    ${cluster.kubectlCommand(["get", "eippool", "-o", "wide"]).join(" ")}`);
  say(`    sudo ip netns exec ${outside} ping ${EIP}`);
  say(
    `    sudo ip netns exec ${d.router.namespace} birdc -s ${lab.stateDir("bird")}/bird.ctl show route`,
  );
  say(`    logs: ${lab.logDir}`);

  if (exitAtEnd) {
    step("Tearing the site down (--exit)");
    await lab.down();
    return;
  }
  step("The site stays up until you press Ctrl-C here (that removes everything it made).");
  say(
    `    If this process is killed hard: sudo node dist/src/bin/lab.js cleanup --prefix ${lab.prefix}`,
  );
  await new Promise<never>(() => {
    // Runs until the lab's SIGINT/SIGTERM handler tears everything down and exits.
  });
}

/** An EipPool, and a VM that asks for an EIP by its annotation: no address typed. */
async function vmStep(lab: Lab, cluster: LabCluster, outside: string): Promise<void> {
  step("kubectl apply: an EipPool public (192.168.18.0/25), the default pool");
  await cluster.kubectl(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "extension.lucheng0127/v1",
      kind: "EipPool",
      metadata: { name: "public" },
      spec: { addresses: ["192.168.18.0/25"], default: true },
    }),
  );
  step(`A VirtualMachine "db" annotated ${EIP_ANNOTATION}: auto, started on node 1`);
  const vms = new LabVms(cluster);
  const started = performance.now();
  await vms.create("db", { annotations: { [EIP_ANNOTATION]: "auto" }, node: 1 });
  await lab.startTcpServer(lab.vmiNamespace("db"), 80);
  const eip = await boundEip(cluster, "db");
  say(
    `    EipBinding db Ready ${(performance.now() - started).toFixed(0)} ms after the VM was created`,
  );
  say(indent(await cluster.kubectl(["get", "vm,vmi"])));
  say(indent(await cluster.kubectl(["get", "eipbinding", "-o", "wide"])));
  say(indent(await cluster.kubectl(["get", "eippool"])));
  const owner = await cluster.kubectl([
    "get",
    "eipbinding",
    "db",
    "-o",
    "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
  ]);
  say(`    the operator made EipBinding db, owned by ${owner}, and allocated ${eip} from the pool`);
  say(
    `    TCP to ${eip}:80 -> the VM saw the connection come from ${(await lab.tcpRequest(outside, eip, 80)).trim()}`,
  );
  step("The VM restarts on node 2 (its VMI deleted and made again): the same EIP");
  await vms.stop("db");
  await vms.start("db", 2);
  await lab.startTcpServer(lab.vmiNamespace("db"), 80);
  const again = await boundEip(cluster, "db", "node2");
  say(indent(await cluster.kubectl(["get", "eipbinding", "db", "-o", "wide"])));
  say(
    `    ${again === eip ? "the same" : "ANOTHER"} EIP ${again}; TCP to it -> the VM saw ${(await lab.tcpRequest(outside, again, 80)).trim()}`,
  );
}

/** Waits until the binding exists and is Ready (on `node`, if given); its EIP. */
async function boundEip(cluster: LabCluster, name: string, node?: string): Promise<string> {
  let eip = "";
  await waitFor(async () => {
    const out = await cluster.kubectl([
      "get",
      "eipbinding",
      name,
      "--ignore-not-found",
      "-o",
      'jsonpath={.status.eipAddr} {.status.nodeName} {.status.conditions[?(@.type=="Ready")].status}',
    ]);
    const [addr, on, ready] = out.trim().split(" ");
    eip = addr ?? "";
    return ready === "True" && (node === undefined || on === node);
  });
  return eip;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 20));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
