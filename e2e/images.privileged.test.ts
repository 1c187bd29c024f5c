// The images, proven by running them (`make image-test`): buildah builds the agent and
// operator targets of the Dockerfile without a Docker daemon (on the local stand-in base of
// scripts/image-base.sh), and runc runs each as its manifest in config/ says (args, user,
// capabilities, read-only root, mounts): the agent in a lab node's network namespace, the
// operator in-cluster against the lab's kube-apiserver, with its ServiceAccount's token and
// the RBAC of config/default. The operator must win the Lease and bind an EipBinding
// through the agent, and the outside must reach the VMI through the EIP and back.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { copyFile, chmod, chown, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { ExecRunner } from "../src/kernel/runner.js";
import { SERVICE_NET } from "../src/lab/agents.js";
import { type LabCluster, startLabCluster } from "../src/lab/cluster.js";
import { ImageStore, missingImageTools } from "../src/lab/images.js";
import { labPki, labPkiPaths } from "../src/lab/lab-tls.js";
import { Lab } from "../src/lab/lab.js";
import { NETNS_ETC_DIR } from "../src/lab/netns.js";
import {
  type Mount,
  OCI_RUNTIME,
  type RunningContainer,
  runContainer,
  runtimeRoot,
} from "../src/lab/oci-run.js";
import { type WorkloadContainer, workloadContainer } from "../src/lab/pod-spec.js";
import { NEEDS_ROOT, eventually, whoami } from "./harness.js";

const config = (path: string) => fileURLToPath(new URL(`../../config/${path}`, import.meta.url));
const EIP = "192.168.18.100";
const PORT = 8080;
const NAMESPACE = "kube-eip-system";
const CAP_NET_ADMIN_RAW = (1n << 12n) | (1n << 13n);

const missing = missingImageTools();
const SKIP =
  NEEDS_ROOT ||
  (missing.length > 0
    ? `needs ${missing.join(", ")} to build and run the images (scripts/setup.sh installs them)`
    : false);

/** Kubernetes' $(VAR) in args, from the container's environment. */
const expand = (args: readonly string[], env: Record<string, string>) =>
  args.map((a) => a.replace(/\$\((\w+)\)/g, (_, name: string) => env[name] ?? `$(${name})`));

/** The workload's mounts, hostPath volumes at `hostPaths[path]` (or the path), others from `dirs`. */
function mountsOf(
  c: WorkloadContainer,
  hostPaths: Record<string, string>,
  dirs: Record<string, string>,
): Mount[] {
  return c.mounts.map((m) => {
    if (m.hostPath !== undefined) {
      return {
        destination: m.mountPath,
        source: hostPaths[m.hostPath] ?? m.hostPath,
        readOnly: m.readOnly,
      };
    }
    if (m.kind === "emptyDir") return { destination: m.mountPath };
    const source = dirs[m.name] ?? assert.fail(`no folder for the ${m.kind} volume ${m.name}`);
    return { destination: m.mountPath, source, readOnly: m.readOnly };
  });
}

const HOST_RT_TABLES = "/etc/iproute2/rt_tables";

describe("the images, built with buildah and run with runc in the lab", { skip: SKIP }, () => {
  let hostRtTables: string | undefined;
  let store: ImageStore;
  let lab: Lab;
  let cluster: LabCluster;
  let agent: RunningContainer;
  let operator: RunningContainer;
  let images: { agent: string; operator: string };

  before(async () => {
    hostRtTables = await readFile(HOST_RT_TABLES, "utf8").catch(() => undefined);
    const commit = (
      await new ExecRunner().run("git", ["-C", config(".."), "rev-parse", "HEAD"]).catch(() => ({
        stdout: "unknown",
      }))
    ).stdout.trim();
    store = await ImageStore.open();
    images = {
      agent: await store.build("agent", commit),
      operator: await store.build("operator", commit),
    };
    lab = await Lab.up({ nodes: 1, removeOnExit: true });
    cluster = await startLabCluster(lab);
    const pki = await labPki(lab);
    await lab.startTcpServer(lab.describe().outside.namespace, PORT);
    await cluster.createVmi("web", 1);
    await lab.startTcpServer(lab.vmiNamespace("web"), PORT);

    // The agent: the DaemonSet's container, the ConfigMap's values for this lab.
    const ds = await workloadContainer(config("agent/eip-agent.yaml"), "DaemonSet");
    assert.ok(ds.dropsAll, "the DaemonSet drops every capability it does not add");
    const cm = (
      parse(await readFile(config("agent/eip-agent-cm.yaml"), "utf8")) as {
        data: Record<string, string>;
      }
    ).data;
    const labCm: Record<string, string> = {
      ...cm,
      svc_net: SERVICE_NET,
      pod_net: lab.topology.podNet,
      eip_net: lab.topology.publicNet,
      eip_gw_ip: lab.topology.routerPublic,
      eip_gw_dev: lab.node(1).gatewayDevice,
      log_level: "debug",
    };
    const env: Record<string, string> = { AGENT_NODE_IP: lab.node(1).mgmtAddress };
    for (const [k, v] of Object.entries(labCm)) if (v !== "") env[`AGENT_${k.toUpperCase()}`] = v;
    // The node's /etc/kube-eip/pki: its own certificate under the ConfigMap's names.
    const nodePki = lab.stateDir("image-node1-pki");
    const own = pki.nodes.get("node1") ?? assert.fail("node1's certificate");
    await copyFile(own.cert, join(nodePki, "agent.crt"));
    await copyFile(own.key, join(nodePki, "agent.key"));
    await copyFile(own.clientCa, join(nodePki, "client-ca.crt"));
    const stateDir = lab.stateDir("image-agent-state");
    agent = await runContainer(store, images.agent, "agent", {
      ns: lab.nodeNamespace(1),
      args: expand(ds.args, env),
      env,
      capabilities: ds.capabilities,
      user: { uid: ds.runAsUser ?? 0, gid: 0 },
      readOnlyRoot: ds.readOnlyRootFilesystem,
      noNewPrivileges: ds.noPrivilegeEscalation,
      mounts: mountsOf(
        ds,
        {
          "/var/lib/kube-eip": stateDir,
          "/var/run/eip_agent": lab.stateDir("image-agent-no-seed"),
          "/etc/kube-eip/pki": nodePki,
          // The node's own rt_tables (where the agent names table 1001), never the host's.
          "/etc/iproute2": join(NETNS_ETC_DIR, lab.nodeNamespace(1), "iproute2"),
        },
        {},
      ),
      waitFor: /"msg":"serving gRPC"/,
    });

    // The operator: the Deployment's container, in-cluster with its ServiceAccount's token.
    await cluster.kubectl(["apply", "--server-side", "-k", config("default")]);
    const token = await cluster.kubectl([
      "create",
      "token",
      "-n",
      NAMESPACE,
      "kube-eip-controller-manager",
    ]);
    const dep = await workloadContainer(config("manager/manager.yaml"), "Deployment");
    assert.ok(dep.dropsAll, "the Deployment drops every capability");
    const uid = dep.runAsUser ?? assert.fail("the Deployment names no runAsUser");
    const gid = dep.runAsGroup ?? uid;
    const fsGroup = dep.fsGroup ?? gid;
    /** A Secret's volume as the kubelet writes it: files 0440 of group fsGroup. */
    const secretDir = async (name: string, files: Record<string, string | { from: string }>) => {
      const dir = lab.stateDir(name);
      await chown(dir, 0, fsGroup);
      for (const [file, content] of Object.entries(files)) {
        const path = join(dir, file);
        if (typeof content === "string") await writeFile(path, content);
        else await copyFile(content.from, path);
        await chown(path, 0, fsGroup);
        await chmod(path, 0o440);
      }
      return dir;
    };
    const files = labPkiPaths(lab);
    const agentTls = await secretDir("image-operator-tls", {
      "ca.crt": { from: files.agentCa.cert },
      "tls.crt": { from: files.operator.cert },
      "tls.key": { from: files.operator.key },
    });
    const serviceAccount = await secretDir("image-operator-sa", {
      token: token.trim(),
      "ca.crt": { from: cluster.controlPlane.caCert },
      namespace: NAMESPACE,
    });
    const server = new URL(cluster.server);
    operator = await runContainer(store, images.operator, "operator", {
      ns: cluster.routerNamespace,
      args: dep.args,
      env: {
        POD_NAMESPACE: NAMESPACE,
        KUBERNETES_SERVICE_HOST: server.hostname,
        KUBERNETES_SERVICE_PORT: server.port,
      },
      capabilities: dep.capabilities,
      user: { uid, gid, groups: [fsGroup] },
      readOnlyRoot: dep.readOnlyRootFilesystem,
      noNewPrivileges: dep.noPrivilegeEscalation,
      mounts: [
        ...mountsOf(dep, {}, { "agent-tls": agentTls }),
        {
          destination: "/var/run/secrets/kubernetes.io/serviceaccount",
          source: serviceAccount,
          readOnly: true,
        },
      ],
      waitFor: '"msg":"started leading"',
    });
  });

  after(async () => {
    await operator?.stop();
    await agent?.stop();
    await lab?.down();
    await store?.close();
  });

  test("the agent's container has NET_ADMIN and NET_RAW only, no new privileges, a read-only root", async () => {
    const status = await readFile(`/proc/${agent.pid}/status`, "utf8");
    const eff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? assert.fail(status);
    assert.equal(BigInt(`0x${eff}`), CAP_NET_ADMIN_RAW);
    assert.match(status, /^NoNewPrivs:\s*1$/m);
    // The agent named its routing table in the lab node's rt_tables, not in the host's.
    assert.match(
      await readFile(join(NETNS_ETC_DIR, lab.nodeNamespace(1), "iproute2", "rt_tables"), "utf8"),
      /^1001\teip_route$/m,
    );
    assert.equal(await readFile(HOST_RT_TABLES, "utf8").catch(() => undefined), hostRtTables);
    assert.match(agent.proc.output(), /"msg":"settings from the environment"/);
    // The image's own tools, run in the container's namespaces: iptables of Debian bookworm,
    // and the nft of --dataplane nftables.
    const r = await new ExecRunner().run(OCI_RUNTIME, [
      "--root",
      runtimeRoot(store),
      "exec",
      agent.id,
      "sh",
      "-c",
      "iptables --version; nft --version; touch /probe 2>&1 || true",
    ]);
    assert.match(r.stdout, /^iptables v1\.8\.9/m);
    assert.match(r.stdout, /^nftables v1\.0\.6/m);
    assert.match(r.stdout, /Read-only file system/);
  });

  test("the operator's image holds the Lease as the container's PID 1 and binds an EipBinding: Ready, traffic both ways", async () => {
    const holder = await cluster.kubectl([
      "get",
      "lease",
      "-n",
      NAMESPACE,
      "kube-eip-leader",
      "-o",
      "jsonpath={.spec.holderIdentity}",
    ]);
    assert.equal(holder, "operator_1");
    await cluster.applyEipBinding("web", EIP, "web");
    await cluster.kubectl(["wait", "--for=condition=Ready", "eipbinding/web", "--timeout=60s"]);
    const outside = lab.describe().outside.namespace;
    assert.ok(
      await eventually(
        async () => (await whoami(lab, outside, EIP, PORT)) === lab.topology.outside,
        20_000,
      ),
      "the outside reaches the VMI through the EIP",
    );
    assert.equal(await whoami(lab, lab.vmiNamespace("web"), lab.topology.outside, PORT), EIP);
  });
});
