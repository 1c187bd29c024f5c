// A helper of the operator benchmark, run inside the lab's router namespace (which reaches
// the apiserver):
//
//   node dist/bench/ready-watch.js KUBECONFIG NAMESPACE
//
// Watches the namespace's EipBindings with the operator's own informer and prints
// `READY <name>` the first time each one's Ready condition is True (the benchmark stamps the
// line when it arrives), `SYNCED` once listed, and on SIGTERM `RESTARTS <n>` (watches
// re-opened after an error or a silence) before it exits. `kubectl get --watch` was used
// first: it exits when the apiserver closes its watch, which an apiserver under load does to
// a watcher it finds too slow; the informer resumes from the last resourceVersion instead.
import { createLogger } from "../src/common/logger.js";
import { EIPBINDINGS, KubeClient } from "../src/kube/client.js";
import { loadKubeConfig } from "../src/kube/config.js";
import { Informer, type KubeObject } from "../src/kube/informer.js";

interface Binding extends KubeObject {
  status?: { conditions?: { type: string; status: string }[] };
}

const [kubeconfig, namespace] = process.argv.slice(2);
if (!kubeconfig || !namespace) {
  process.stderr.write("usage: ready-watch.js KUBECONFIG NAMESPACE\n");
  process.exit(2);
}
const client = new KubeClient(loadKubeConfig({ kubeconfig }), { userAgent: "operator-bench" });
const informer = new Informer<Binding>(client, EIPBINDINGS, {
  namespace,
  name: "eipbindings",
  logger: createLogger("ready-watch", "warn"),
});
const ready = new Set<string>();
informer.onEvent((ev) => {
  const name = ev.obj.metadata.name;
  if (ev.type === "deleted" || ready.has(name)) return;
  if (ev.obj.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")) {
    ready.add(name);
    process.stdout.write(`READY ${name}\n`);
  }
});
process.on("SIGTERM", () => {
  process.stdout.write(`RESTARTS ${informer.restarts}\n`, () => process.exit(0));
});
informer.start();
await informer.waitForSync();
process.stdout.write("SYNCED\n");
