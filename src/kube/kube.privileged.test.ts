// The Kubernetes client against a real etcd and kube-apiserver (src/kube-lab, in this
// process's network namespace on 127.0.0.1): CRUD, patches and the status subresource on the
// EipBinding CRD, the informer through an apiserver restart, a 410 and a silent watch, two
// leader electors on one Lease, Events with a series, and ServiceAccount tokens (a
// kubeconfig's, and a rotating in-cluster token file). Needs root (the convention for tests
// that run real daemons); skipped otherwise.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { startControlPlane, type ControlPlane } from "../kube-lab/control-plane.js";
import {
  EIPBINDINGS,
  KubeApiError,
  KubeClient,
  LEASES,
  isAlreadyExists,
  isConflict,
  isNotFound,
  type ResourceRef,
} from "./client.js";
import { loadKubeConfig } from "./config.js";
import { EventRecorder } from "./events.js";
import { Informer, type InformerEvent, type KubeObject, type ListWatchClient } from "./informer.js";
import { LeaderElector, type Lease } from "./leader.js";

const skip = process.getuid?.() === 0 ? false : "needs root: runs etcd and kube-apiserver";
const silent = pino({ level: "silent" });

const CRD = fileURLToPath(
  new URL("../../../config/crd/bases/extension.lucheng0127_eipbindings.yaml", import.meta.url),
);
const NAMESPACES: ResourceRef = {
  group: "",
  version: "v1",
  resource: "namespaces",
  namespaced: false,
};
const SELF_SUBJECT_REVIEWS: ResourceRef = {
  group: "authentication.k8s.io",
  version: "v1",
  resource: "selfsubjectreviews",
  namespaced: false,
};

interface EipBinding extends KubeObject {
  spec: { eipAddr: string; vmiName: string };
  status?: {
    nodeName?: string;
    vmiAddress?: string;
    conditions?: {
      type: string;
      status: string;
      reason: string;
      message: string;
      lastTransitionTime: string;
    }[];
  };
  metadata: KubeObject["metadata"] & { managedFields?: { manager: string }[] };
}

function binding(ns: string, name: string, eip: string): EipBinding {
  return {
    apiVersion: "extension.lucheng0127/v1",
    kind: "EipBinding",
    metadata: { name, namespace: ns },
    spec: { eipAddr: eip, vmiName: name },
  };
}

/** Polls until cond() holds; fails after a generous timeout naming what it waited for. */
async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe("the kube client against a real kube-apiserver", { skip }, () => {
  let cp: ControlPlane;
  let client: KubeClient;

  before(async () => {
    cp = await startControlPlane();
    client = new KubeClient(loadKubeConfig({ kubeconfig: cp.kubeconfig }));
    await cp.applyManifests([CRD]);
    await cp.waitForCrdEstablished("eipbindings.extension.lucheng0127");
  });

  after(async () => {
    client?.close();
    await cp?.stop();
  });

  async function namespace(name: string): Promise<string> {
    await client.create(NAMESPACES, undefined, {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name },
    });
    return name;
  }

  test("EipBindings: create, get, list in pages, patches, conflicts, the status subresource, delete", async () => {
    const ns = await namespace("crud");
    const created = await client.create<EipBinding>(
      EIPBINDINGS,
      ns,
      binding(ns, "web", "192.168.18.100"),
    );
    assert.ok(created.metadata.uid && created.metadata.resourceVersion);
    assert.equal(created.metadata.generation, 1);
    await assert.rejects(
      client.create(EIPBINDINGS, ns, binding(ns, "web", "192.168.18.101")),
      isAlreadyExists,
    );
    await assert.rejects(
      client.create(EIPBINDINGS, ns, binding(ns, "bad", "300.1.1.1")),
      (e: unknown) => e instanceof KubeApiError && e.status === 422 && e.reason === "Invalid",
    );

    const merged = await client.patch<EipBinding>(
      EIPBINDINGS,
      ns,
      "web",
      { spec: { eipAddr: "192.168.18.110" } },
      { type: "merge" },
    );
    assert.equal(merged.spec.eipAddr, "192.168.18.110");
    assert.equal(merged.metadata.generation, 2);
    await assert.rejects(
      client.replace(EIPBINDINGS, ns, "web", {
        ...created,
        spec: { ...created.spec, vmiName: "other" },
      }),
      isConflict,
      "a PUT with the old resourceVersion",
    );

    // Status only through the subresource; the main resource ignores it and the other way round.
    const status = {
      nodeName: "node1",
      vmiAddress: "10.244.1.10",
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "Bound",
          message: "bound on node1",
          lastTransitionTime: "2025-01-01T00:00:00Z",
        },
      ],
    };
    const withStatus = await client.replace<EipBinding>(
      EIPBINDINGS,
      ns,
      "web",
      { ...merged, status },
      { subresource: "status" },
    );
    assert.deepEqual(withStatus.status, status);
    assert.equal(withStatus.metadata.generation, 2, "a status write is no new generation");
    await client.patch(
      EIPBINDINGS,
      ns,
      "web",
      { status: { nodeName: "ignored" }, spec: { vmiName: "web2" } },
      { type: "merge" },
    );
    await client.patch(
      EIPBINDINGS,
      ns,
      "web",
      { status: { vmiAddress: "10.244.2.20" }, spec: { vmiName: "ignored" } },
      { type: "merge", subresource: "status" },
    );
    const read = await client.get<EipBinding>(EIPBINDINGS, ns, "web");
    assert.equal(read.spec.vmiName, "web2");
    assert.equal(read.status?.nodeName, "node1");
    assert.equal(read.status?.vmiAddress, "10.244.2.20");

    const jsonPatched = await client.patch<EipBinding>(
      EIPBINDINGS,
      ns,
      "web",
      [
        { op: "test", path: "/spec/vmiName", value: "web2" },
        { op: "replace", path: "/spec/vmiName", value: "web3" },
      ],
      { type: "json" },
    );
    assert.equal(jsonPatched.spec.vmiName, "web3");
    const applied = await client.patch<EipBinding>(
      EIPBINDINGS,
      ns,
      "applied",
      binding(ns, "applied", "192.168.18.120"),
      { type: "apply", fieldManager: "kube-eip-test", force: true },
    );
    assert.ok(applied.metadata.managedFields?.some((f) => f.manager === "kube-eip-test"));

    for (let i = 0; i < 5; i++)
      await client.create(EIPBINDINGS, ns, binding(ns, `page-${i}`, `192.168.18.${130 + i}`));
    const { items, resourceVersion } = await client.list<EipBinding>(EIPBINDINGS, {
      namespace: ns,
      limit: 2,
    });
    assert.deepEqual(items.map((b) => b.metadata.name).sort(), [
      "applied",
      "page-0",
      "page-1",
      "page-2",
      "page-3",
      "page-4",
      "web",
    ]);
    assert.ok(
      items.every((b) => b.kind === "EipBinding" && b.apiVersion === "extension.lucheng0127/v1"),
    );
    assert.match(resourceVersion, /^\d+$/);

    await assert.rejects(
      client.delete(EIPBINDINGS, ns, "web", { preconditions: { uid: "not-its-uid" } }),
      isConflict,
    );
    await client.delete(EIPBINDINGS, ns, "web", {
      preconditions: { uid: created.metadata.uid ?? "" },
    });
    await assert.rejects(client.get(EIPBINDINGS, ns, "web"), isNotFound);
  });

  test("a YAML kubeconfig with embedded certificates (kubectl config view --raw --flatten) works too", async () => {
    const yaml = await cp.kubectl.run(["config", "view", "--raw", "--flatten"]);
    assert.match(yaml, /^apiVersion: v1$/m);
    assert.match(yaml, /client-key-data: /);
    const dir = await mkdtemp(join(tmpdir(), "kube-eip-kc-"));
    try {
      await writeFile(join(dir, "config"), yaml, { mode: 0o600 });
      const other = new KubeClient(loadKubeConfig({ kubeconfig: join(dir, "config") }));
      const ns = await other.get<KubeObject>(NAMESPACES, undefined, "default");
      assert.equal(ns.metadata.name, "default");
      other.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("the informer sees adds, updates and deletes in order, and recovers from an apiserver restart by itself", async () => {
    const ns = await namespace("informer");
    const informer = new Informer<EipBinding>(client, EIPBINDINGS, {
      namespace: ns,
      logger: silent,
      name: "eipbindings",
      backoffBaseMs: 200,
      backoffMaxMs: 2000,
    });
    const seen: string[] = [];
    informer.onEvent((ev: InformerEvent<EipBinding>) =>
      seen.push(`${ev.type} ${ev.obj.metadata.name} ${ev.obj.spec.eipAddr}`),
    );
    await client.create(EIPBINDINGS, ns, binding(ns, "before", "192.168.18.1"));
    informer.start();
    try {
      await informer.waitForSync();
      assert.deepEqual(seen, ["added before 192.168.18.1"]);

      await client.create(EIPBINDINGS, ns, binding(ns, "a", "192.168.18.2"));
      await client.patch(
        EIPBINDINGS,
        ns,
        "a",
        { spec: { eipAddr: "192.168.18.3" } },
        { type: "merge" },
      );
      await client.create(EIPBINDINGS, ns, binding(ns, "b", "192.168.18.4"));
      await client.delete(EIPBINDINGS, ns, "a");
      await waitFor("four watch events", () => seen.length === 5);
      assert.deepEqual(seen.slice(1), [
        "added a 192.168.18.2",
        "modified a 192.168.18.3",
        "added b 192.168.18.4",
        "deleted a 192.168.18.3",
      ]);

      await cp.restartApiServer();
      await client.create(EIPBINDINGS, ns, binding(ns, "c", "192.168.18.5"));
      await client.patch(
        EIPBINDINGS,
        ns,
        "b",
        { spec: { eipAddr: "192.168.18.6" } },
        { type: "merge" },
      );
      await client.delete(EIPBINDINGS, ns, "before");
      const truth = async () =>
        (await client.list<EipBinding>(EIPBINDINGS, { namespace: ns })).items
          .map((b) => `${b.metadata.name}@${b.metadata.resourceVersion}`)
          .sort();
      const cached = () =>
        informer
          .list()
          .map((b) => `${b.metadata.name}@${b.metadata.resourceVersion}`)
          .sort();
      const want = await truth();
      await waitFor(
        "the cache to match the apiserver after its restart",
        () => cached().join() === want.join(),
      );
      assert.deepEqual(
        informer
          .list()
          .map((b) => b.metadata.name)
          .sort(),
        ["b", "c"],
      );
      assert.ok(informer.restarts >= 1, "the watch the restart cut was started again");
      assert.deepEqual(seen.filter((s) => /^(added c|modified b|deleted before)/.test(s)).sort(), [
        "added c 192.168.18.5",
        "deleted before 192.168.18.1",
        "modified b 192.168.18.6",
      ]);
    } finally {
      await informer.stop();
    }
  });

  test("a 410 from the apiserver re-lists, and the informer emits what changed while it was away", async () => {
    const ns = await namespace("gone");
    for (const name of ["keep", "change", "drop"]) {
      await client.create(EIPBINDINGS, ns, binding(ns, name, "192.168.18.40"));
    }
    // The real client, except that while `held` no watch starts, and the next one then asks
    // for resourceVersion 1, long gone from the apiserver's watch cache.
    let release: () => void = () => undefined;
    let held: Promise<void> | undefined;
    const gate: ListWatchClient = {
      list: (ref, opts, req) => client.list(ref, opts, req),
      watch: async (ref, opts, onEvent, signal) => {
        if (!held) return client.watch(ref, opts, onEvent, signal);
        await held;
        held = undefined;
        return client.watch(ref, { ...opts, resourceVersion: "1" }, onEvent, signal);
      },
    };
    const informer = new Informer<EipBinding>(gate, EIPBINDINGS, {
      namespace: ns,
      logger: silent,
      name: "gone",
    });
    const seen: string[] = [];
    informer.onEvent((ev) => seen.push(`${ev.type} ${ev.obj.metadata.name}`));
    held = new Promise((resolve) => (release = resolve));
    informer.start();
    try {
      await informer.waitForSync();
      assert.deepEqual([...seen].sort(), ["added change", "added drop", "added keep"]);
      await client.patch(
        EIPBINDINGS,
        ns,
        "change",
        { spec: { eipAddr: "192.168.18.41" } },
        { type: "merge" },
      );
      await client.delete(EIPBINDINGS, ns, "drop");
      await client.create(EIPBINDINGS, ns, binding(ns, "new", "192.168.18.42"));
      release();
      await waitFor("a re-list after the 410", () => informer.relists >= 1);
      assert.deepEqual(seen.slice(3).sort(), ["added new", "deleted drop", "modified change"]);
      assert.deepEqual(
        informer
          .list()
          .map((b) => b.metadata.name)
          .sort(),
        ["change", "keep", "new"],
      );
      assert.equal(informer.get(`${ns}/change`)?.spec.eipAddr, "192.168.18.41");
    } finally {
      release();
      await informer.stop();
    }
  });

  test("a watch that falls silent is restarted by the watchdog, and the cache stays right", async () => {
    const ns = await namespace("quiet");
    const informer = new Informer<EipBinding>(client, EIPBINDINGS, {
      namespace: ns,
      logger: silent,
      name: "quiet",
      watchTimeoutSec: 600,
      silenceTimeoutMs: 1000,
    });
    informer.start();
    try {
      await informer.waitForSync();
      await waitFor("two silent watches restarted", () => informer.silences >= 2, 30_000);
      assert.equal(informer.relists, 0, "a silent watch is restarted, not re-listed");
      await client.create(EIPBINDINGS, ns, binding(ns, "late", "192.168.18.50"));
      await waitFor(
        "the object created after the silences",
        () => informer.get(`${ns}/late`) !== undefined,
      );
    } finally {
      await informer.stop();
    }
  });

  test("two leader electors: exactly one leads; stop() hands over long before the Lease would expire", async () => {
    const ns = await namespace("leader");
    const leading = new Set<string>();
    const electors = ["op-a", "op-b"].map(
      (identity) =>
        new LeaderElector(
          client,
          // A 60 s Lease: a handover within the test's 30 s can only come from the release.
          {
            namespace: ns,
            name: "eip-operator",
            identity,
            leaseDurationSec: 60,
            renewDeadlineSec: 40,
            retryPeriodSec: 1,
            logger: silent,
          },
          {
            onStartedLeading: () => void leading.add(identity),
            onStoppedLeading: () => void leading.delete(identity),
          },
        ),
    );
    const runs = electors.map((e) => e.run());
    try {
      await waitFor("a leader", () => leading.size > 0, 30_000);
      const lease = async () => (await client.get<Lease>(LEASES, ns, "eip-operator")).spec ?? {};
      const first = await lease();
      // A few renewals later, still exactly one leader, and the same one.
      await waitFor(
        "two renewals",
        async () => (await lease()).renewTime !== first.renewTime,
        30_000,
      );
      const second = await lease();
      await waitFor(
        "another renewal",
        async () => (await lease()).renewTime !== second.renewTime,
        30_000,
      );
      assert.equal(leading.size, 1);
      const leader = [...leading][0] ?? "";
      assert.equal((await lease()).holderIdentity, leader);
      assert.deepEqual(
        electors.map((e) => e.isLeader),
        ["op-a", "op-b"].map((id) => id === leader),
      );

      const leaderIndex = electors.findIndex((e) => e.isLeader);
      await electors[leaderIndex]?.stop();
      const successor = leaderIndex === 0 ? "op-b" : "op-a";
      await waitFor("the other elector to lead", () => leading.has(successor), 30_000);
      assert.deepEqual([...leading], [successor]);
      const taken = await lease();
      assert.equal(taken.holderIdentity, successor);
      assert.equal(taken.leaseTransitions, 1);
      assert.equal(taken.leaseDurationSeconds, 60);
    } finally {
      await Promise.all(electors.map((e) => e.stop()));
      await Promise.all(runs);
    }
  });

  test("Events: repeats show as one Event with a series count in kubectl", async () => {
    const ns = await namespace("events");
    const subject = await client.create<EipBinding>(
      EIPBINDINGS,
      ns,
      binding(ns, "noisy", "192.168.18.60"),
    );
    const recorder = new EventRecorder(client, {
      controller: "kube-eip.lucheng0127/eip-operator",
      instance: "eip-operator-test",
      logger: silent,
      seriesIntervalMs: 200,
    });
    for (let i = 0; i < 5; i++) {
      recorder.record(
        subject,
        "Warning",
        "BindFailed",
        "Bind",
        "agent 172.16.0.11:6127 unreachable",
      );
      await sleep(50);
    }
    recorder.record(subject, "Normal", "Bound", "Bind", "EIP 192.168.18.60 bound on node1");
    await recorder.flush();
    interface Ev {
      reason: string;
      note: string;
      type: string;
      reportingController: string;
      series?: { count: number };
      regarding: { kind: string; name: string; uid: string };
    }
    const list = (await cp.kubectl.getJson(["events.events.k8s.io", "-n", ns])) as { items: Ev[] };
    const about = list.items.filter((e) => e.regarding.uid === subject.metadata.uid);
    assert.equal(about.length, 2, "five repeats are one Event");
    const failed = about.find((e) => e.reason === "BindFailed");
    assert.equal(failed?.series?.count, 5);
    assert.equal(failed?.type, "Warning");
    assert.equal(failed?.reportingController, "kube-eip.lucheng0127/eip-operator");
    assert.deepEqual(failed?.regarding.kind, "EipBinding");
    const bound = about.find((e) => e.reason === "Bound");
    assert.equal(bound?.note, "EIP 192.168.18.60 bound on node1");
    assert.equal(bound?.series, undefined);
    assert.equal(recorder.dropped, 0);
    const table = await cp.kubectl.run(["get", "events.events.k8s.io", "-n", ns]);
    assert.match(table, /BindFailed/);
  });

  test("ServiceAccount tokens: from a token kubeconfig under RBAC, and a rotating in-cluster token file", async () => {
    const ns = await namespace("sa");
    for (const sa of ["operator", "successor"])
      await cp.kubectl.run(["create", "serviceaccount", sa, "-n", ns]);
    await cp.kubectl.run([
      "create",
      "role",
      "eipbindings-reader",
      "-n",
      ns,
      "--verb=get,list,watch",
      "--resource=eipbindings.extension.lucheng0127",
    ]);
    await cp.kubectl.run([
      "create",
      "rolebinding",
      "operator-reads",
      "-n",
      ns,
      "--role=eipbindings-reader",
      `--serviceaccount=${ns}:operator`,
    ]);
    await client.create(EIPBINDINGS, ns, binding(ns, "mine", "192.168.18.70"));
    const token = async (sa: string) =>
      (await cp.kubectl.run(["create", "token", sa, "-n", ns, "--duration=1h"])).trim();

    const operator = new KubeClient(
      loadKubeConfig({
        kubeconfig: await cp.writeTokenKubeconfig("operator", await token("operator")),
      }),
    );
    try {
      // RBAC reads its bindings from an informer: the binding takes effect shortly.
      let names: string[] = [];
      await waitFor(
        "RBAC to allow the list",
        async () => {
          try {
            names = (await operator.list<EipBinding>(EIPBINDINGS, { namespace: ns })).items.map(
              (b) => b.metadata.name,
            );
            return true;
          } catch (err) {
            if (err instanceof KubeApiError && err.status === 403) return false;
            throw err;
          }
        },
        10_000,
      );
      assert.deepEqual(names, ["mine"]);
      await assert.rejects(
        operator.list(EIPBINDINGS, { namespace: "default" }),
        (e: unknown) => e instanceof KubeApiError && e.status === 403 && e.reason === "Forbidden",
      );
    } finally {
      operator.close();
    }

    // In a pod: KUBERNETES_SERVICE_HOST/PORT and the kubelet's files; the token rotates.
    const saDir = await mkdtemp(join(tmpdir(), "kube-eip-sa-"));
    try {
      await writeFile(join(saDir, "token"), await token("operator"));
      await writeFile(join(saDir, "ca.crt"), await readFile(cp.caCert));
      await writeFile(join(saDir, "namespace"), ns);
      const url = new URL(cp.server);
      const cfg = loadKubeConfig({
        env: { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port },
        serviceAccountDir: saDir,
        tokenRefreshMs: 0,
      });
      assert.equal(cfg.namespace, ns);
      const inCluster = new KubeClient(cfg);
      const whoami = async () =>
        (
          await inCluster.create<{ status: { userInfo: { username: string } } }>(
            SELF_SUBJECT_REVIEWS,
            undefined,
            {
              apiVersion: "authentication.k8s.io/v1",
              kind: "SelfSubjectReview",
            },
          )
        ).status.userInfo.username;
      assert.equal(await whoami(), `system:serviceaccount:${ns}:operator`);
      await writeFile(join(saDir, "token"), await token("successor"));
      assert.equal(
        await whoami(),
        `system:serviceaccount:${ns}:successor`,
        "the new token is used",
      );
      inCluster.close();
    } finally {
      await rm(saDir, { recursive: true, force: true });
    }
  });
});
