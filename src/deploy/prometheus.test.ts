// config/prometheus against the binaries' own metrics: every metric and label that the
// alerting rules and the Grafana dashboard read is one the agent's or the operator's registry
// exports (a misspelt name is an alert that never fires, a panel that stays empty);
// `kubectl kustomize` renders the tree, and its monitors select the operator's Service and
// the agents' pods of config/default and config/agent by their labels and port names.
import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { AgentMetrics } from "../agent/metrics.js";
import { OperatorMetrics } from "../operator/metrics.js";
import { ExecRunner } from "../kernel/runner.js";
import { findKubeBinaries } from "../kube-lab/binaries.js";
import { REPO_ROOT, parseObjects, type KubeObject } from "./chart.js";

const DIR = join(REPO_ROOT, "config", "prometheus");
/** Labels Prometheus adds to every scraped series (and podmonitor.yaml's node). */
const TARGET_LABELS = [
  "job",
  "instance",
  "namespace",
  "pod",
  "container",
  "endpoint",
  "service",
  "node",
];
/** PromQL's functions, aggregations and keywords that these expressions use. */
const PROMQL_WORDS = new Set(
  "sum max min avg count rate irate increase histogram_quantile by without on ignoring and or unless bool".split(
    " ",
  ),
);

/** Every series name each registry exports, with its label names (a histogram's three). */
async function exportedSeries(): Promise<Map<string, Set<string>>> {
  const series = new Map<string, Set<string>>();
  for (const { registry } of [new AgentMetrics(), new OperatorMetrics()]) {
    for (const { name, type } of await registry.getMetricsAsJSON()) {
      const metric = registry.getSingleMetric(name) as unknown as {
        labelNames?: readonly string[];
      };
      const labels = metric.labelNames ?? [];
      if (String(type) === "histogram") {
        series.set(`${name}_bucket`, new Set([...labels, "le"]));
        series.set(`${name}_sum`, new Set(labels));
        series.set(`${name}_count`, new Set(labels));
      } else series.set(name, new Set(labels));
    }
  }
  return series;
}

/**
 * What is wrong with a PromQL expression (and the `$labels.x` its alert's texts read): the
 * metric names no registry exports, and the label names that none of the expression's
 * metrics has. Empty when all is known.
 */
function unknownNames(
  series: ReadonlyMap<string, ReadonlySet<string>>,
  expr: string,
  texts: readonly string[] = [],
): string[] {
  const problems: string[] = [];
  const text = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\[[^\]]*\]/g, "");
  const grouping: string[] = [];
  const rest = text
    .replace(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g, (_, names: string) => {
      grouping.push(...names.split(",").map((n) => n.trim()));
      return " ";
    })
    .replace(
      /([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g,
      (_, metric: string | undefined, matchers: string) => {
        const own = new Set([...(series.get(metric ?? "") ?? []), ...TARGET_LABELS]);
        for (const [, label] of matchers.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) {
          if (!own.has(label ?? "")) problems.push(`label ${label} of ${metric}`);
        }
        return ` ${metric ?? ""} `;
      },
    );
  const metrics = [...rest.matchAll(/(?<![\w.])[a-zA-Z_:][\w:]*/g)]
    .map((m) => m[0])
    .filter((w) => !PROMQL_WORDS.has(w));
  const labels = new Set(TARGET_LABELS);
  for (const m of metrics) {
    if (!series.has(m)) problems.push(`metric ${m}`);
    for (const l of series.get(m) ?? []) labels.add(l);
  }
  const read = texts.flatMap((t) => [...t.matchAll(/\$labels\.(\w+)/g)].map((m) => m[1] ?? ""));
  for (const l of [...grouping.filter((g) => g !== ""), ...read]) {
    if (!labels.has(l)) problems.push(`label ${l}`);
  }
  return problems;
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  annotations?: Record<string, string>;
}
interface Panel {
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: { expr?: string; datasource?: unknown }[];
}

let series: Map<string, Set<string>>;
let rules: Rule[];
let dashboardText: string;
before(async () => {
  series = await exportedSeries();
  const [rule] = parseObjects(await readFile(join(DIR, "rules.yaml"), "utf8")) as (KubeObject & {
    spec: { groups: { rules: Rule[] }[] };
  })[];
  rules = rule?.spec.groups.flatMap((g) => g.rules) ?? [];
  dashboardText = await readFile(join(DIR, "dashboard.json"), "utf8");
});

describe("the names config/prometheus reads", () => {
  test("the check knows a misspelt metric or label from a real one", () => {
    assert.deepEqual(unknownNames(series, "kube_eip_agent_dataplane_in_sync == 0"), []);
    assert.deepEqual(unknownNames(series, "kube_eip_agent_dataplane_in_synk == 0"), [
      "metric kube_eip_agent_dataplane_in_synk",
    ]);
    assert.deepEqual(unknownNames(series, 'kube_eip_operator_bindings{reasons!="Bound"} > 0'), [
      "label reasons of kube_eip_operator_bindings",
    ]);
    assert.deepEqual(unknownNames(series, "sum by (peer) (kube_eip_agent_bindings)"), [
      "label peer",
    ]);
    assert.deepEqual(
      unknownNames(
        series,
        "histogram_quantile(0.9, sum by (le) (rate(kube_eip_agent_apply_duration_seconds_bucket[5m])))",
      ),
      [],
    );
  });

  test("every alert reads metrics and labels the agent or the operator exports", () => {
    const alerts = rules.map((r) => r.alert).sort();
    assert.deepEqual(alerts, [
      "KubeEipAgentApplyErrors",
      "KubeEipAgentCertificateExpiry",
      "KubeEipAgentOutOfSync",
      "KubeEipBgpPeerDown",
      "KubeEipBindingsNotReady",
      "KubeEipOperatorCertificateExpiry",
    ]);
    for (const r of rules) {
      assert.ok(r.for, `${r.alert} has a for:`);
      assert.deepEqual(
        unknownNames(series, r.expr, Object.values(r.annotations ?? {})),
        [],
        r.alert,
      );
    }
  });

  test("the dashboard is JSON; every panel has a data source and targets on exported metrics", () => {
    const dashboard = JSON.parse(dashboardText) as { panels: Panel[] };
    assert.ok(dashboard.panels.length >= 6);
    for (const p of dashboard.panels) {
      assert.equal(p.datasource?.type, "prometheus", p.title);
      assert.ok(p.targets && p.targets.length > 0, `${p.title} has targets`);
      for (const t of p.targets) {
        assert.ok(t.expr && t.datasource, `${p.title}: a target with an expr and a data source`);
        assert.deepEqual(unknownNames(series, t.expr), [], `${p.title}: ${t.expr}`);
      }
    }
  });
});

describe("kubectl kustomize config/prometheus", () => {
  const runner = new ExecRunner();
  const render = async (tree: string): Promise<KubeObject[]> => {
    const { kubectl } = await findKubeBinaries();
    const { stdout } = await runner.run(kubectl, ["kustomize", join(REPO_ROOT, "config", tree)], {
      timeoutMs: 60_000,
    });
    return parseObjects(stdout);
  };
  /** The one object of this kind, as the shape this test reads of it. */
  const find = <T>(objects: KubeObject[], kind: string): KubeObject & T => {
    const o = objects.find((x) => x.kind === kind);
    assert.ok(o, `a ${kind}`);
    return o as KubeObject & T;
  };
  const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
    Object.entries(selector).every(([k, v]) => labels[k] === v);

  test("renders the monitors, the rules and the dashboard's ConfigMap", async () => {
    const objects = await render("prometheus");
    assert.deepEqual(objects.map((o) => o.kind).sort(), [
      "ConfigMap",
      "PodMonitor",
      "PrometheusRule",
      "ServiceMonitor",
    ]);
    const cm = find<{ data: Record<string, string> }>(objects, "ConfigMap");
    assert.equal(cm.metadata.labels?.grafana_dashboard, "1");
    assert.equal(cm.data["kube-eip.json"], dashboardText);
  });

  test("the ServiceMonitor selects the operator's metrics Service and its port", async () => {
    const monitor = find<{
      spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string }[] };
    }>(await render("prometheus"), "ServiceMonitor");
    const operator = await render("default");
    const service = operator.find(
      (o) => o.kind === "Service" && o.metadata.name.includes("metrics"),
    ) as (KubeObject & { spec: { ports: { name: string; port: number }[] } }) | undefined;
    assert.ok(service);
    assert.equal(monitor.metadata.namespace, service.metadata.namespace);
    const spec = monitor.spec;
    assert.ok(matches(spec.selector.matchLabels, service.metadata.labels));
    assert.deepEqual(
      service.spec.ports.filter((p) => p.name === spec.endpoints[0]?.port).map((p) => p.port),
      [8080],
    );
  });

  test("the PodMonitor selects the agents' pods and their metrics port", async () => {
    const monitor = find<{
      spec: {
        selector: { matchLabels: Record<string, string> };
        podMetricsEndpoints: { port: string }[];
      };
    }>(await render("prometheus"), "PodMonitor");
    const ds = find<{
      spec: {
        template: {
          metadata: { labels: Record<string, string> };
          spec: { containers: { ports?: { name: string; containerPort: number }[] }[] };
        };
      };
    }>(await render("agent"), "DaemonSet");
    assert.equal(monitor.metadata.namespace, ds.metadata.namespace);
    const spec = monitor.spec;
    assert.ok(matches(spec.selector.matchLabels, ds.spec.template.metadata.labels));
    const ports = ds.spec.template.spec.containers.flatMap((c) => c.ports ?? []);
    assert.deepEqual(
      ports.filter((p) => p.name === spec.podMetricsEndpoints[0]?.port).map((p) => p.containerPort),
      [9127],
    );
  });
});
