// The main job, end to end on one host: build the lab site with its BGP router (BIRD 2),
// run a real eip_agent on each node announcing through its gobgpd, bind an EIP to a VMI
// with eipctl, and show the EIP's route arriving at the router and traffic from behind the
// router reaching the VMI through the EIP and leaving as it. Then it keeps the site up for the reader to poke at until Ctrl-C
// (or tears it down at once with --exit).
import { Lab } from "../src/lab/lab.js";
import { SERVICE_NET, eipctl, startAgent } from "../src/lab/agents.js";
import { startBgpRouter } from "../src/lab/bgp-router.js";

const EIP = "192.168.18.100";
const exitAtEnd = process.argv.includes("--exit");

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

function step(text: string): void {
  say(`\n==> ${text}`);
}

async function main(): Promise<void> {
  step(
    "Building the lab: EIP router, outside host, two hypervisor nodes (FORWARD policy DROP), a pod",
  );
  const lab = await Lab.up({ nodes: 2, removeOnExit: true });
  const d = lab.describe();
  const router = await startBgpRouter(lab);
  const routerNs = d.router.namespace;
  say(
    `    BIRD 2 on the router (AS ${router.asn}, ${d.router.mgmtAddress}) peers with each node (AS ${router.nodeAsn}) over the management network`,
  );
  const outside = d.outside.namespace;
  say(
    `    prefix ${lab.prefix}; outside host ${d.outside.address}; router ${d.router.publicAddress} on ${d.publicNet}`,
  );

  const vmi = await lab.addVmi("web", 1);
  say(`    VMI "web" at ${vmi.address} on node 1's cni0 (namespace ${vmi.namespace})`);
  await lab.startTcpServer(vmi.namespace, 80);
  await lab.startTcpServer(outside, 8080);
  await lab.startTcpServer(lab.pod().namespace, 8080);

  step("Starting eip_agent with --bgp-type gobgp on both nodes (each in its node's namespace)");
  for (const node of [1, 2]) {
    const agent = await startAgent(lab, node, {
      resyncSeconds: 10,
      extraArgs: router.agentArgs(node),
    });
    say(
      `    node ${node}: pid ${agent.proc.pid}, gRPC ${lab.node(node).mgmtAddress}:6127, log ${agent.proc.logFile}`,
    );
  }
  const started = Date.now();
  for (;;) {
    const sessions = await router.sessions();
    if (sessions.get(1) === "Established" && sessions.get(2) === "Established") break;
    if (Date.now() - started > 30_000) throw new Error("BGP sessions did not come up");
    await new Promise((r) => setTimeout(r, 200));
  }
  say(
    `    both BGP sessions up after ${((Date.now() - started) / 1000).toFixed(1)} s (gobgpd waits 5 to 10 s before its first connect)`,
  );

  step(`Before binding: the outside host pings ${EIP}`);
  say(
    `    ${(await lab.ping(outside, EIP)).replied ? "answered (unexpected!)" : "no answer: nothing holds the EIP yet"}`,
  );

  step(`eipctl --action bind --eip-ip ${EIP} --vmi-ip ${vmi.address}   (run on node 1)`);
  const bound = await eipctl(lab, 1, [
    "--action",
    "bind",
    "--eip-ip",
    EIP,
    "--vmi-ip",
    vmi.address,
  ]);
  say(`    exit ${bound.code}: ${(bound.stdout || bound.stderr).trim()}`);
  if (bound.code !== 0) throw new Error("bind failed");
  const listed = await eipctl(lab, 1, ["--action", "list"]);
  say(listed.stdout.replace(/^/gm, "    ").trimEnd());

  step("The router learned the EIP by BGP: its kernel table (ip route show proto bird)");
  const learnedAt = Date.now();
  while (!(await router.kernelRoutes()).has(`${EIP}/32`) && Date.now() - learnedAt < 10_000) {
    await new Promise((r) => setTimeout(r, 20));
  }
  say(
    (await lab.exec(routerNs, ["ip", "route", "show", "proto", "bird"])).stdout
      .replace(/^/gm, "    ")
      .trimEnd(),
  );
  say((await eipctl(lab, 1, ["--action", "peers"])).stdout.replace(/^/gm, "    ").trimEnd());

  step("Inbound: the outside host, behind the router, reaches the VMI through the EIP");
  const ping = await lab.ping(outside, EIP, { count: 3 });
  say(`    ping ${EIP}: ${ping.received}/${ping.sent} replies`);
  say(
    `    TCP to ${EIP}:80 -> the VMI saw the connection come from ${(await lab.tcpRequest(outside, EIP, 80)).trim()}`,
  );

  step("Outbound: the VMI's traffic leaves as the EIP; cluster traffic is not NATed");
  say(
    `    VMI -> outside host ${d.outside.address}:8080: seen from ${(await lab.tcpRequest(vmi.namespace, d.outside.address, 8080)).trim()}`,
  );
  say(
    `    VMI -> pod ${lab.pod().address} on node 2: seen from ${(await lab.tcpRequest(vmi.namespace, lab.pod().address, 8080)).trim()}`,
  );
  say(
    `    VMI -> service ${lab.topology.serviceAddress} (${SERVICE_NET}): seen from ${(await lab.tcpRequest(vmi.namespace, lab.topology.serviceAddress, 8080)).trim()}`,
  );

  step("What the agent wrote on node 1");
  const n1 = lab.nodeNamespace(1);
  const save = await lab.nodeExec(1, [`iptables-${lab.node(1).iptablesMode}-save`, "-t", "nat"]);
  say(
    save.stdout
      .split("\n")
      .filter((l) => l.includes("KUBE-EIP"))
      .map((l) => `    ${l}`)
      .join("\n"),
  );
  say(
    (await lab.nodeExec(1, ["ip", "rule", "show", "priority", "1001"])).stdout
      .replace(/^/gm, "    ")
      .trimEnd(),
  );
  say(
    (await lab.nodeExec(1, ["ip", "route", "show", "table", "eip_route"])).stdout
      .replace(/^/gm, "    ")
      .trimEnd(),
  );

  const sock = `${lab.stateDir("agent-node1")}/agent.sock`;
  step("Poke at it");
  say(`    sudo ip netns exec ${outside} ping ${EIP}`);
  say(`    sudo ip netns exec ${n1} iptables-save -t nat | grep KUBE-EIP`);
  say(`    sudo ip netns exec ${routerNs} birdc -s ${lab.stateDir("bird")}/bird.ctl show route`);
  say(
    `    sudo node dist/src/bin/eipctl.js --target ${lab.node(1).mgmtAddress}:6127 --action peers   (inside ${n1})`,
  );
  say(`    sudo node dist/src/bin/eipctl.js --target unix:${sock} --action list`);
  say(
    `    sudo node dist/src/bin/eipctl.js --target unix:${sock} --action unbind --eip-ip ${EIP} --vmi-ip ${vmi.address}`,
  );
  say(`    sudo node dist/src/bin/lab.js status --prefix ${lab.prefix}`);
  say(`    agent logs: ${lab.logDir}`);

  if (exitAtEnd) {
    step("Tearing the lab down (--exit)");
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

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
