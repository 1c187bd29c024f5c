// Every value combination the chart's README documents ("Value combinations"), with the real
// helm: `helm lint --strict` and `helm template` pass, and each renders what a user setting
// those values would check for. A documented combination without a check here, or a check
// for one the README dropped, fails.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { ExecRunner } from "../kernel/runner.js";
import { findHelm } from "../kube-lab/helm.js";
import { CHART_DIR, documentedCombinations, renderChart, type KubeObject } from "./chart.js";

const runner = new ExecRunner();
let helm: string;
let combinations: string[][];

before(async () => {
  helm = await findHelm();
  combinations = documentedCombinations(await readFile(join(CHART_DIR, "README.md"), "utf8"));
});

interface Container {
  name: string;
  image: string;
  imagePullPolicy?: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  securityContext?: { capabilities?: { add?: string[] } };
}
interface Pod {
  spec: {
    replicas?: number;
    template: {
      spec: {
        containers: Container[];
        initContainers?: Container[];
        imagePullSecrets?: { name: string }[];
      };
    };
  };
}

/** What a user looks at in one rendering. */
class Rendered {
  constructor(readonly objects: KubeObject[]) {}
  find(kind: string, name: string): KubeObject | undefined {
    return this.objects.find((o) => o.kind === kind && o.metadata.name === name);
  }
  get(kind: string, name: string): KubeObject {
    return this.find(kind, name) ?? assert.fail(`no ${kind} ${name}`);
  }
  get config(): Record<string, string> {
    return (this.get("ConfigMap", "eip-agent-cm") as unknown as { data: Record<string, string> })
      .data;
  }
  get agent(): Pod {
    return this.get("DaemonSet", "eip-agent") as unknown as Pod;
  }
  get operator(): Pod {
    return this.get("Deployment", "kube-eip-controller-manager") as unknown as Pod;
  }
  container(pod: Pod, name: string): Container {
    return pod.spec.template.spec.containers.find((c) => c.name === name) ?? assert.fail(name);
  }
  kinds(kind: string): string[] {
    return this.objects.filter((o) => o.kind === kind).map((o) => o.metadata.name);
  }
}

const CHECKS: Record<string, (r: Rendered) => void> = {
  "--set tls.enabled=false": (r) => {
    assert.deepEqual(r.kinds("Secret"), []);
    const args = r.container(r.operator, "manager").args ?? [];
    assert.ok(!args.some((a) => a.startsWith("--agent-tls")));
    assert.ok(args.includes("--agent-insecure"), "plaintext said explicitly");
    assert.equal(r.config["tls_cert"], "");
    assert.equal(r.config["tls_allowed_clients"], "");
    assert.equal(r.config["insecure"], "true");
  },
  "--set tls.allowedClients={kube-eip-operator} --set tls.allowedReaders={prometheus,audit}": (
    r,
  ) => {
    assert.equal(r.config["tls_allowed_clients"], "kube-eip-operator", "kube-eip-admin dropped");
    assert.equal(r.config["tls_allowed_readers"], "prometheus,audit");
    assert.equal(r.config["insecure"], "false");
  },
  "--set monitoring.enabled=true": (r) => {
    const where = (kind: string, name: string) => r.get(kind, name).metadata.namespace;
    assert.equal(where("ServiceMonitor", "kube-eip-operator"), "kube-eip-system");
    assert.equal(where("PodMonitor", "kube-eip-agent"), "kube-eip-agent");
    assert.equal(where("PrometheusRule", "kube-eip"), "kube-eip-system");
    const dashboard = r.get("ConfigMap", "kube-eip-dashboard") as unknown as {
      metadata: { namespace: string; labels: Record<string, string> };
      data: Record<string, string>;
    };
    assert.equal(dashboard.metadata.namespace, "kube-eip-system");
    assert.equal(dashboard.metadata.labels["grafana_dashboard"], "1", "for Grafana's sidecar");
    assert.equal(
      (JSON.parse(dashboard.data["kube-eip.json"] ?? "") as { uid: string }).uid,
      "kube-eip",
    );
    // The alerts keep Prometheus' templates: helm does not expand them.
    assert.match(JSON.stringify(r.get("PrometheusRule", "kube-eip")), /\{\{ \$labels\.node \}\}/);
  },
  "--set tls.certManager.enabled=true": (r) => {
    assert.deepEqual(r.kinds("Secret"), []);
    assert.deepEqual(r.kinds("ClusterIssuer"), [], "namespaced Issuers only");
    assert.deepEqual(r.kinds("Issuer").sort(), [
      "kube-eip-agent-ca",
      "kube-eip-client-ca",
      "kube-eip-selfsigned",
    ]);
    assert.deepEqual(r.kinds("Certificate").sort(), [
      "kube-eip-agent-ca",
      "kube-eip-client-ca",
      "kube-eip-operator-tls",
    ]);
    assert.equal(r.config["tls_cert"], "/etc/kube-eip/pki/agent.crt");
  },
  "--set tls.certManager.enabled=true --set tls.certManager.agentIssuerRef.kind=ClusterIssuer --set tls.certManager.agentIssuerRef.name=my-agent-ca --set tls.certManager.clientIssuerRef.kind=Issuer --set tls.certManager.clientIssuerRef.name=my-client-ca --set tls.certManager.nodes={node-1,node-2}":
    (r) => {
      assert.deepEqual([...r.kinds("ClusterIssuer"), ...r.kinds("Issuer")], [], "none of ours");
      assert.deepEqual(r.kinds("Certificate").sort(), [
        "kube-eip-agent-node-1",
        "kube-eip-agent-node-2",
        "kube-eip-operator-tls",
      ]);
      const spec = (name: string) =>
        (
          r.get("Certificate", name) as unknown as {
            spec: { issuerRef: object; commonName: string; secretName: string };
          }
        ).spec;
      assert.deepEqual(spec("kube-eip-operator-tls").issuerRef, {
        group: "cert-manager.io",
        kind: "Issuer",
        name: "my-client-ca",
      });
      for (const node of ["node-1", "node-2"]) {
        const s = spec(`kube-eip-agent-${node}`);
        assert.equal(s.commonName, `kube-eip-agent:${node}`, "the identity the operator checks");
        assert.equal(s.secretName, `kube-eip-agent-${node}`);
        assert.deepEqual(s.issuerRef, {
          group: "cert-manager.io",
          kind: "ClusterIssuer",
          name: "my-agent-ca",
        });
      }
    },
  "--set agent.config.bgpType=gobgp --set agent.config.bgpLocalAs=65001 --set agent.config.bgpPeers={192.0.2.1:65000,192.0.2.2:65000} --set agent.bgpPassword=s3cret":
    (r) => {
      assert.equal(r.config["bgp_type"], "gobgp");
      assert.equal(r.config["bgp_local_as"], "65001");
      assert.equal(r.config["bgp_peers"], "192.0.2.1:65000,192.0.2.2:65000");
      const secret = r.get("Secret", "kube-eip-agent-bgp") as unknown as {
        metadata: { namespace: string };
        data: { password: string };
      };
      assert.equal(secret.metadata.namespace, "kube-eip-agent");
      assert.equal(Buffer.from(secret.data.password, "base64").toString(), "s3cret");
    },
  "--set agent.config.bgpType=gobgp --set agent.config.bgpLocalAs=65001 --set agent.config.bgpPeers=192.0.2.1:65000 --set agent.gobgpSidecar.enabled=true":
    (r) => {
      assert.equal(r.container(r.agent, "gobgpd").image, "kube-eip/eip-agent:0.1.0");
      const env = r.container(r.agent, "eip-agent").env ?? [];
      assert.deepEqual(
        env.find((e) => e.name === "AGENT_GOBGP_ENDPOINT"),
        { name: "AGENT_GOBGP_ENDPOINT", value: "unix:/run/gobgp/api.sock" },
      );
      assert.deepEqual(
        r.agent.spec.template.spec.initContainers?.map((c) => c.name),
        ["gobgp-api-dir"],
      );
    },
  "--set agent.config.bgpType=gobgp --set agent.config.bgpListenPort=179 --set agent.extraCapabilities={NET_BIND_SERVICE}":
    (r) => {
      assert.equal(r.config["bgp_listen_port"], "179");
      assert.deepEqual(r.container(r.agent, "eip-agent").securityContext?.capabilities?.add, [
        "NET_ADMIN",
        "NET_RAW",
        "NET_BIND_SERVICE",
      ]);
    },
  "--set agent.config.arpPoisoning=true --set agent.config.garpCount=0": (r) => {
    assert.equal(r.config["arp_poisoning"], "true");
    assert.equal(r.config["garp_count"], "0", "0 (no gratuitous ARP) is not lost as empty");
  },
  "--set agent.config.iptablesMode=nft --set agent.config.dataplane=nftables --set agent.config.commandTimeout=10 --set agent.config.stallTimeout=120 --set agent.config.resyncInterval=60":
    (r) => {
      assert.equal(r.config["iptables_mode"], "nft");
      assert.equal(r.config["dataplane"], "nftables");
      assert.equal(r.config["command_timeout"], "10");
      assert.equal(r.config["stall_timeout"], "120");
      assert.equal(r.config["resync_interval"], "60");
    },
  "--set agent.config.svcNet={10.96.0.0/12,172.30.0.0/16} --set agent.config.podNet=10.244.0.0/16 --set agent.config.cniDev=br0":
    (r) => {
      assert.equal(r.config["svc_net"], "10.96.0.0/12,172.30.0.0/16");
      assert.equal(r.config["pod_net"], "10.244.0.0/16");
      assert.equal(r.config["cni_dev"], "br0");
    },
  "--set images.operator.repository=registry.example/eip-operator --set images.operator.tag=1.2.3 --set images.agent.repository=registry.example/eip-agent --set images.agent.pullPolicy=Always --set images.pullSecrets[0].name=regcred":
    (r) => {
      const manager = r.container(r.operator, "manager");
      assert.equal(manager.image, "registry.example/eip-operator:1.2.3");
      assert.equal(manager.imagePullPolicy, undefined);
      const agent = r.container(r.agent, "eip-agent");
      assert.equal(agent.image, "registry.example/eip-agent:0.1.0");
      assert.equal(agent.imagePullPolicy, "Always");
      for (const pod of [r.operator, r.agent]) {
        assert.deepEqual(pod.spec.template.spec.imagePullSecrets, [{ name: "regcred" }]);
      }
    },
  "--set namespaces.create=false --set crds.install=false": (r) => {
    assert.deepEqual(r.kinds("Namespace"), []);
    assert.deepEqual(r.kinds("CustomResourceDefinition"), []);
    assert.ok(r.find("DaemonSet", "eip-agent"), "the rest is there");
  },
  "--set crds.keep=false --set operator.replicas=2 --set operator.logLevel=debug --set operator.extraArgs={--agent-timeout=5s}":
    (r) => {
      const crd = r.get("CustomResourceDefinition", "eipbindings.extension.lucheng0127");
      assert.equal(crd.metadata.annotations, undefined, "helm uninstall deletes it");
      assert.equal(r.operator.spec.replicas, 2);
      const args = r.container(r.operator, "manager").args ?? [];
      assert.ok(args.includes("--log-level=debug"));
      assert.equal(args.at(-1), "--agent-timeout=5s");
    },
};

test("the defaults: namespaces, the CRD kept by helm uninstall, TLS with the chart's own CAs", async () => {
  const r = new Rendered(await renderChart(runner, helm));
  assert.deepEqual(r.kinds("Namespace"), ["kube-eip-system", "kube-eip-agent"]);
  const crd = r.get("CustomResourceDefinition", "eipbindings.extension.lucheng0127");
  assert.deepEqual(crd.metadata.annotations, { "helm.sh/resource-policy": "keep" });
  assert.deepEqual(r.kinds("Secret").sort(), [
    "kube-eip-agent-ca",
    "kube-eip-client-ca",
    "kube-eip-operator-tls",
  ]);
  assert.deepEqual(r.kinds("Certificate"), []);
  assert.equal(r.config["tls_allowed_clients"], "kube-eip-operator,kube-eip-admin");
  assert.equal(r.config["insecure"], "false");
  assert.ok(!r.container(r.operator, "manager").args?.includes("--agent-insecure"));
});

test("every documented combination has its check here, and every check a documented line", () => {
  assert.deepEqual(combinations.map((c) => c.join(" ")).sort(), Object.keys(CHECKS).sort());
});

test("every documented combination lints and renders what it says", async () => {
  for (const args of combinations) {
    const line = args.join(" ");
    const { stdout } = await runner.run(helm, ["lint", "--strict", CHART_DIR, ...args]);
    assert.match(stdout, /0 chart\(s\) failed/, line);
    const check = CHECKS[line] ?? assert.fail(`no check for ${line}`);
    check(new Rendered(await renderChart(runner, helm, args)));
  }
});

test("bad values are refused by the schema, naming the value, and nothing renders", async () => {
  const refused = async (set: string, message: RegExp) => {
    await assert.rejects(renderChart(runner, helm, ["--set", set]), message, set);
  };
  await refused("agent.config.eipNet.cidr=1.2.3.0/24", /\/agent\/config\/eipNet': got object/);
  // A misspelt ConfigMap key would reach no flag: refused, not rendered as eip_g_w_ip.
  await refused("agent.config.eipGWIp=1.2.3.4", /additional properties 'eipGWIp' not allowed/);
  await refused("tls.certManager.agentIssuerRef.name=my-ca", /'kind' required, if 'name' exists/);
  // One issuer of yours and one CA of ours would be neither config/certmanager nor yours.
  await refused(
    "tls.certManager.agentIssuerRef.kind=Issuer,tls.certManager.agentIssuerRef.name=my-ca",
    /clientIssuerRef': missing property 'name'/,
  );
  // A CN with a comma would be two entries of the agents' allow-list.
  await refused("tls.allowedClients[0]=a\\,b", /\/tls\/allowedClients\/0/);
  await refused("images.agent.pullPolicy=Sometimes", /\/images\/agent\/pullPolicy/);
  await refused("operator.metricsPort=0", /\/operator\/metricsPort/);
});
