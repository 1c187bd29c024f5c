// The Helm chart (charts/kube-eip) and the kustomize trees (config/) it must match, rendered
// to objects for the tests: `helm template` and `kubectl kustomize`, and the small explicit
// normalisation under which both must give the same objects.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import type { CommandRunner } from "../kernel/runner.js";

export const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
export const CHART_DIR = join(REPO_ROOT, "charts", "kube-eip");
export const RELEASE = "kube-eip";

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

/**
 * Every object of a multi-document YAML stream. YAML 1.1, as the apiserver's decoder reads
 * it: `defaultMode: 0400` is octal there.
 */
export function parseObjects(text: string): KubeObject[] {
  return parseAllDocuments(text, { version: "1.1" })
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`bad YAML: ${doc.errors[0]?.message}`);
      return doc.toJS() as KubeObject | null;
    })
    .filter((o): o is KubeObject => o !== null);
}

/** `helm template` of the chart with these `--set`/`--values` arguments, as objects. */
export async function renderChart(
  runner: CommandRunner,
  helm: string,
  args: readonly string[] = [],
): Promise<KubeObject[]> {
  const { stdout } = await runner.run(helm, ["template", RELEASE, CHART_DIR, ...args], {
    timeoutMs: 60_000,
  });
  return parseObjects(stdout);
}

/**
 * What `make deploy` and `make deploy-agent` apply: config/default and config/agent with
 * their images set, through an overlay in .cache as the Makefile's (kustomize wants relative paths).
 */
export async function renderKustomize(
  runner: CommandRunner,
  kubectl: string,
  images: { readonly operator: string; readonly agent: string },
): Promise<KubeObject[]> {
  await mkdir(join(REPO_ROOT, ".cache"), { recursive: true });
  const dir = await mkdtemp(join(REPO_ROOT, ".cache", "kustomize-test-"));
  try {
    const config = relative(dir, join(REPO_ROOT, "config"));
    await writeFile(
      join(dir, "kustomization.yaml"),
      JSON.stringify({
        resources: [`${config}/default`, `${config}/agent`],
        images: [
          { name: "eip-operator", newName: images.operator },
          { name: "eip-agent", newName: images.agent },
        ],
      }),
    );
    const { stdout } = await runner.run(kubectl, ["kustomize", dir], { timeoutMs: 60_000 });
    return parseObjects(stdout);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** kind/namespace/name: what identifies an object in a cluster. */
export function objectKey(o: KubeObject): string {
  return `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
}

/** The labels Helm's charts put on every object, which kustomize's trees do not carry. */
export const HELM_LABELS = [
  "helm.sh/chart",
  "app.kubernetes.io/managed-by",
  "app.kubernetes.io/instance",
  "app.kubernetes.io/version",
];

interface Container {
  env?: { name: string }[];
  volumeMounts?: unknown[];
}
interface PodSpec {
  containers?: Container[];
  initContainers?: Container[];
  volumes?: unknown[];
}
interface PodTemplate {
  spec?: { template?: { spec?: PodSpec } };
}

/**
 * The object without what only tells the two tools apart, and nothing else: Helm's labels,
 * the CRD's `helm.sh/resource-policy: keep` (helm uninstall leaves the CRD), and the order
 * of the containers' env (the chart lists the ConfigMap's keys sorted; no entry refers to
 * another, so the order has no meaning), and empty `volumes` and `volumeMounts` lists (what
 * kustomize's `$patch: delete` leaves; the apiserver stores them as absent).
 */
export function normalise(o: KubeObject): KubeObject {
  const copy = structuredClone(o);
  const { labels, annotations } = copy.metadata;
  for (const label of HELM_LABELS) delete labels?.[label];
  delete annotations?.["helm.sh/resource-policy"];
  if (annotations && Object.keys(annotations).length === 0) delete copy.metadata.annotations;
  const pod = (copy as PodTemplate).spec?.template?.spec;
  if (pod?.volumes?.length === 0) delete pod.volumes;
  for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
    c.env?.sort((a, b) => a.name.localeCompare(b.name));
    if (c.volumeMounts?.length === 0) delete c.volumeMounts;
  }
  return copy;
}

/** The `--set` combinations the chart's README documents, one line each ("Value combinations"). */
export function documentedCombinations(readme: string): string[][] {
  const section = readme.split(/^## Value combinations$/m)[1];
  const block = section && /```text\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('the chart README has no "Value combinations" block');
  return block
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => line.trim().split(/\s+/));
}
