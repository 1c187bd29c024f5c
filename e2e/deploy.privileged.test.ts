// Deploying to a real cluster, against a real kube-apiserver (src/kube-lab): every kustomize
// tree builds and is accepted; `make deploy` and `make deploy-agent` update a seed
// installation in place and set the images; the operator's ServiceAccount may do exactly
// what the operator needs (kubectl auth can-i with its own token); the TLS Secrets of
// kube-eip-certs apply. There is no kubelet: objects are stored, no pod runs (the agent's
// container start-up is tested in the lab, agent-container.privileged.test.ts).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { CommandError, ExecRunner } from "../src/kernel/runner.js";
import { startControlPlane, type ControlPlane } from "../src/kube-lab/control-plane.js";
import { makeCerts, secretsManifest } from "../src/deploy/certs.js";
import { NEEDS_ROOT, eventually } from "./harness.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const fixture = (name: string) => join(ROOT, "e2e", "fixtures", name);
const runner = new ExecRunner();

const OPERATOR_IMG = "registry.example:5000/kube-eip/eip-operator:1.2.3";
const AGENT_IMG = "registry.example:5000/kube-eip/eip-agent:1.2.3";
const TREES = [
  "crd",
  "rbac",
  "manager",
  "default",
  "agent",
  "samples",
  "plaintext",
  "plaintext-agent",
  "certmanager",
];

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string }[];
  securityContext?: {
    privileged?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
    readOnlyRootFilesystem?: boolean;
    runAsUser?: number;
  };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface Workload {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: { spec: { containers: Container[]; volumes?: { name: string }[] } };
  };
}

/**
 * What the seed's `make deploy` and `make deploy-agent` left: the fields that matter here (its
 * selectors, its commands, a proxy sidecar). Not its privileged agent: this apiserver, like
 * any run without --allow-privileged, refuses privileged containers; ours is not one.
 */
const SEED_INSTALLATION = [
  { apiVersion: "v1", kind: "Namespace", metadata: { name: "kube-eip-system" } },
  { apiVersion: "v1", kind: "Namespace", metadata: { name: "kube-eip-agent" } },
  {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "kube-eip-controller-manager", namespace: "kube-eip-system" },
    spec: {
      selector: { matchLabels: { "control-plane": "controller-manager" } },
      template: {
        metadata: { labels: { "control-plane": "controller-manager" } },
        spec: {
          containers: [
            { name: "kube-rbac-proxy", image: "kube-rbac-proxy:v0.15.0" },
            {
              name: "manager",
              image: "quay.io/shawnlu0127/eipbinding_operator:20231130",
              command: ["/manager"],
            },
          ],
        },
      },
    },
  },
  {
    apiVersion: "apps/v1",
    kind: "DaemonSet",
    metadata: { name: "eip-agent", namespace: "kube-eip-agent" },
    spec: {
      selector: { matchLabels: { name: "kube-eip-agent" } },
      template: {
        metadata: { labels: { name: "kube-eip-agent" } },
        spec: {
          hostNetwork: true,
          containers: [
            {
              name: "eip-agent",
              image: "quay.io/shawnlu0127/eip_agent:20231204",
              command: ["/entrypoint.sh"],
              volumeMounts: [{ name: "sbin", mountPath: "/usr/sbin", readOnly: true }],
            },
          ],
          volumes: [{ name: "sbin", hostPath: { path: "/usr/sbin" } }],
        },
      },
    },
  },
];

describe("deploying to a real kube-apiserver", { skip: NEEDS_ROOT }, () => {
  let cp: ControlPlane;
  let dir: string;

  /** kubectl as admin; resolves with stdout and stderr (warnings), rejects on failure. */
  const kubectl = (args: readonly string[], input?: string) =>
    runner.run(cp.binaries.kubectl, ["--kubeconfig", cp.kubeconfig, ...args], { input });
  const make = (args: readonly string[]) =>
    runner.run("make", [
      "--no-print-directory",
      "-C",
      ROOT,
      ...args,
      `KUBECTL=${cp.binaries.kubectl} --kubeconfig ${cp.kubeconfig}`,
    ]);
  const getJson = async <T>(args: readonly string[]): Promise<T> =>
    JSON.parse((await kubectl(["get", ...args, "-o", "json"])).stdout) as T;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "kube-eip-deploy-"));
    cp = await startControlPlane();
    await cp.applyManifests([fixture("kubevirt-vmi-crd.yaml"), fixture("kubevirt-vm-crd.yaml")]);
    await cp.waitForCrdEstablished("virtualmachineinstances.kubevirt.io");
    await cp.waitForCrdEstablished("virtualmachines.kubevirt.io");
    // The seed's installation, applied client-side as its Makefile did: what `make deploy`
    // must update in place. Read back, so the tests start from what they think they do.
    await kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "List", items: SEED_INSTALLATION }),
    );
    const manager = await getJson<Workload>([
      "deployment",
      "-n",
      "kube-eip-system",
      "kube-eip-controller-manager",
    ]);
    assert.deepEqual(
      manager.spec.template.spec.containers.map((c) => [c.name, c.image]),
      [
        ["kube-rbac-proxy", "kube-rbac-proxy:v0.15.0"],
        ["manager", "quay.io/shawnlu0127/eipbinding_operator:20231130"],
      ],
      "the seed's operator is installed",
    );
    const agent = await getJson<Workload>(["daemonset", "-n", "kube-eip-agent", "eip-agent"]);
    assert.deepEqual(agent.spec.selector.matchLabels, { name: "kube-eip-agent" });
    assert.deepEqual(
      agent.spec.template.spec.containers.map((c) => [c.name, c.image, c.command]),
      [["eip-agent", "quay.io/shawnlu0127/eip_agent:20231204", ["/entrypoint.sh"]]],
      "the seed's agent is installed",
    );
  });

  after(async () => {
    await cp?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("every kustomize tree builds with kubectl's own kustomize", async () => {
    for (const tree of TREES) {
      const { stdout } = await kubectl(["kustomize", join(ROOT, "config", tree)]);
      assert.match(stdout, /^apiVersion: /m, tree);
    }
  });

  test("make deploy and make deploy-agent update it in place and set the images", async () => {
    await make(["deploy", `IMG=${OPERATOR_IMG}`]);
    await make(["deploy-agent", `AGENT_IMG=${AGENT_IMG}`]);

    const deployment = await getJson<Workload>([
      "deployment",
      "kube-eip-controller-manager",
      "-n",
      "kube-eip-system",
    ]);
    assert.deepEqual(deployment.spec.selector.matchLabels, {
      "control-plane": "controller-manager",
    });
    const [manager, ...others] = deployment.spec.template.spec.containers;
    assert.deepEqual(others, [], "the seed's proxy sidecar is gone");
    assert.equal(manager?.image, OPERATOR_IMG);
    assert.equal(manager?.command, undefined, "the image's entrypoint, not the seed's /manager");
    assert.ok(manager?.args?.includes("--leader-elect"));
    assert.ok(manager?.args?.includes("--agent-tls-ca=/etc/kube-eip/agent-tls/ca.crt"));
    assert.ok(manager?.args?.includes("--metrics-bind-address=:8080"), "plain HTTP on :8080");
    assert.equal(manager?.securityContext?.readOnlyRootFilesystem, true);

    const ds = await getJson<Workload>(["daemonset", "eip-agent", "-n", "kube-eip-agent"]);
    assert.deepEqual(ds.spec.selector.matchLabels, { name: "kube-eip-agent" });
    const [agent] = ds.spec.template.spec.containers;
    assert.equal(agent?.image, AGENT_IMG);
    assert.equal(agent?.securityContext?.privileged, false);
    assert.deepEqual(agent?.securityContext?.capabilities, {
      add: ["NET_ADMIN", "NET_RAW"],
      drop: ["ALL"],
    });
    assert.equal(agent?.command, undefined);
    const mounts = new Map(agent?.volumeMounts?.map((m) => [m.mountPath, m.name]));
    assert.equal(
      mounts.has("/usr/sbin"),
      false,
      "the seed's mount of the host's /usr/sbin is gone",
    );
    for (const path of [
      "/var/lib/kube-eip",
      "/var/run/eip_agent",
      "/run/xtables.lock",
      "/etc/iproute2",
      "/host/proc/sys/net",
      "/etc/kube-eip/pki",
    ]) {
      assert.ok(mounts.has(path), path);
    }
    const env = new Set(agent?.env?.map((e) => e.name));
    for (const name of [
      "AGENT_SVC_NET",
      "AGENT_POD_NET",
      "AGENT_EIP_NET",
      "AGENT_EIP_GW_IP",
      "AGENT_EIP_GW_DEV",
      "AGENT_LOG_LEVEL",
      "AGENT_NODE_IP",
      "AGENT_BGP_PEERS",
      "AGENT_TLS_CERT",
    ]) {
      assert.ok(env.has(name), name);
    }
    const cm = await getJson<{ data: Record<string, string> }>([
      "configmap",
      "eip-agent-cm",
      "-n",
      "kube-eip-agent",
    ]);
    for (const key of ["svc_net", "pod_net", "eip_net", "eip_gw_ip", "eip_gw_dev", "log_level"]) {
      assert.ok(cm.data[key], key);
    }
  });

  test("the seed's IMG=<agent image> make deploy-agent deploys that image", async () => {
    const seedStyle = "quay.example/shawnlu0127/eip_agent:20231204";
    await make(["deploy-agent", `IMG=${seedStyle}`]);
    const ds = await getJson<Workload>(["daemonset", "eip-agent", "-n", "kube-eip-agent"]);
    assert.equal(ds.spec.template.spec.containers[0]?.image, seedStyle);
    await make(["deploy-agent", `AGENT_IMG=${AGENT_IMG}`]);
  });

  test("every tree is accepted by a server-side dry run; the operator meets the restricted PSS", async () => {
    for (const tree of ["crd", "default", "agent", "plaintext", "plaintext-agent"]) {
      const { stderr } = await kubectl([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        join(ROOT, "config", tree),
      ]);
      // kube-eip-system warns on anything short of the restricted Pod Security Standard.
      assert.doesNotMatch(stderr, /PodSecurity|would violate/i, `${tree}: ${stderr}`);
    }
    // The check above can fail: a pod short of the standard draws the warning.
    const loose = {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "loose", namespace: "kube-eip-system" },
      spec: {
        selector: { matchLabels: { app: "loose" } },
        template: {
          metadata: { labels: { app: "loose" } },
          spec: { containers: [{ name: "c", image: "c" }] },
        },
      },
    };
    const { stderr } = await kubectl(
      ["apply", "--server-side", "--dry-run=server", "-f", "-"],
      JSON.stringify(loose),
    );
    assert.match(stderr, /would violate PodSecurity "restricted/);
    await cp.waitForCrdEstablished("eipbindings.extension.lucheng0127");
    await kubectl([
      "apply",
      "--server-side",
      "--dry-run=server",
      "-k",
      join(ROOT, "config/samples"),
    ]);
  });

  test("config/certmanager is accepted where cert-manager's kinds exist (stand-in CRDs)", async () => {
    const { stdout } = await kubectl(["kustomize", join(ROOT, "config/certmanager")]);
    await assert.rejects(
      kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"], stdout),
      /no matches for kind "(Issuer|Certificate)"|ensure CRDs are installed/,
      "without cert-manager the overlay cannot apply",
    );
    await cp.applyManifests([fixture("cert-manager-crds.yaml")]);
    await cp.waitForCrdEstablished("certificates.cert-manager.io");
    await cp.waitForCrdEstablished("issuers.cert-manager.io");
    await kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"], stdout);
    assert.doesNotMatch(stdout, /kind: ClusterIssuer/, "no issuer any namespace can use");
  });

  test("config/prometheus is accepted where the Prometheus Operator's kinds exist (stand-in CRDs)", async () => {
    const { stdout } = await kubectl(["kustomize", join(ROOT, "config/prometheus")]);
    await assert.rejects(
      kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"], stdout),
      /no matches for kind "(ServiceMonitor|PodMonitor|PrometheusRule)"|ensure CRDs are installed/,
      "without the Prometheus Operator the tree cannot apply",
    );
    await cp.applyManifests([fixture("prometheus-operator-crds.yaml")]);
    for (const crd of ["servicemonitors", "podmonitors", "prometheusrules"]) {
      await cp.waitForCrdEstablished(`${crd}.monitoring.coreos.com`);
    }
    await kubectl(["apply", "--server-side", "--dry-run=server", "-f", "-"], stdout);
  });

  test("the operator's ServiceAccount may do what the operator does, and nothing else", async () => {
    const token = (
      await kubectl(["create", "token", "kube-eip-controller-manager", "-n", "kube-eip-system"])
    ).stdout.trim();
    const kc = await cp.writeTokenKubeconfig("operator", token);
    const canI = async (args: readonly string[]) => {
      try {
        await runner.run(cp.binaries.kubectl, ["--kubeconfig", kc, "auth", "can-i", ...args]);
        return true;
      } catch (err) {
        if (err instanceof CommandError && err.exitCode === 1) return false;
        throw err;
      }
    };
    const EB = "eipbindings.extension.lucheng0127";
    const VMI = "virtualmachineinstances.kubevirt.io";
    const VM = "virtualmachines.kubevirt.io";
    const POOL = "eippools.extension.lucheng0127";
    const LEASE = "leases.coordination.k8s.io";
    const EVENT = "events.events.k8s.io";
    const allowed: string[][] = [
      ...["get", "list", "watch", "update", "patch"].flatMap((v) => [
        [v, EB, "-A"],
        [v, EB, "-n", "tenant"],
      ]),
      // The bindings the annotation on a VM or VMI asks for (docs/pools.md).
      ...["create", "delete"].map((v) => [v, EB, "-n", "tenant"]),
      ...["get", "update", "patch"].map((v) => [v, EB, "--subresource=status", "-n", "tenant"]),
      ["update", EB, "--subresource=finalizers", "-n", "tenant"],
      ...["get", "list", "watch"].flatMap((v) => [
        [v, VMI, "-A"],
        [v, VMI, "-n", "tenant"],
        [v, VM, "-A"],
        [v, VM, "-n", "tenant"],
      ]),
      ...["get", "list", "watch"].map((v) => [v, "nodes"]),
      ...["get", "list", "watch"].flatMap((v) => [
        [v, POOL],
        [v, "namespaces"],
      ]),
      ...["get", "update", "patch"].map((v) => [v, POOL, "--subresource=status"]),
      ...["get", "create", "update"].map((v) => [v, LEASE, "-n", "kube-eip-system"]),
      ...["create", "patch"].map((v) => [v, EVENT, "-n", "tenant"]),
    ];
    const denied: string[][] = [
      ["deletecollection", EB, "-n", "tenant"],
      ["patch", EB, "--subresource=finalizers", "-n", "tenant"],
      ["create", VMI, "-n", "tenant"],
      ["update", VMI, "-n", "tenant"],
      ["patch", VMI, "--subresource=status", "-n", "tenant"],
      ["create", VM, "-n", "tenant"],
      ["update", VM, "-n", "tenant"],
      ["delete", VM, "-n", "tenant"],
      ["patch", VM, "--subresource=status", "-n", "tenant"],
      ["list", "secrets", "-A"],
      ["get", "secrets", "-n", "kube-eip-system"],
      ["get", "configmaps", "-n", "kube-eip-agent"],
      ["update", "nodes"],
      ["create", POOL],
      ["update", POOL],
      ["delete", POOL],
      ["update", "namespaces"],
      ["patch", "nodes", "--subresource=status"],
      ["delete", "nodes"],
      ["list", LEASE, "-n", "kube-eip-system"],
      ["delete", LEASE, "-n", "kube-eip-system"],
      ["get", LEASE, "-n", "kube-system"],
      ["create", LEASE, "-n", "tenant"],
      ["create", "events", "-n", "tenant"],
      ["delete", EVENT, "-n", "tenant"],
      ["create", "pods", "-n", "tenant"],
      ["list", "pods", "-A"],
      ["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ];
    // The RBAC authorizer reads the roles from an informer: the binding takes effect shortly.
    assert.ok(await eventually(() => canI(["list", EB, "-A"]), 10_000), "the bindings took effect");
    for (const args of allowed) assert.equal(await canI(args), true, `allowed: ${args.join(" ")}`);
    for (const args of denied) assert.equal(await canI(args), false, `denied: ${args.join(" ")}`);
  });

  test("the Secret of kube-eip-certs applies", async () => {
    const files = await makeCerts(runner, { dir: join(dir, "certs") });
    await kubectl(["apply", "-f", "-"], await secretsManifest(files));
    for (const [name, ns] of [["kube-eip-operator-tls", "kube-eip-system"]] as const) {
      const s = await getJson<{ type: string; data: Record<string, string> }>([
        "secret",
        name,
        "-n",
        ns,
      ]);
      assert.equal(s.type, "kubernetes.io/tls");
      assert.deepEqual(Object.keys(s.data).sort(), ["ca.crt", "tls.crt", "tls.key"]);
    }
  });
});
