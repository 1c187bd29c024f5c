import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { KubeApiError, type PatchOptions, type ResourceRef } from "./client.js";
import { EventRecorder, type EventClient } from "./events.js";
import { FakeClock, settle } from "../common/fake-clock.js";
import type { KubeObject } from "./informer.js";

const silent = pino({ level: "silent" });

interface Written {
  readonly verb: "create" | "patch";
  readonly ns: string | undefined;
  readonly name?: string;
  readonly body: Record<string, unknown>;
}

/** Records every write; failCreate and failPatch make those reject (after recording). */
class FakeEvents implements EventClient {
  readonly writes: Written[] = [];
  failCreate: Error | undefined;
  failPatch: Error | undefined;

  async create<T>(_ref: ResourceRef, ns: string | undefined, obj: unknown): Promise<T> {
    await settle();
    this.writes.push({ verb: "create", ns, body: obj as Record<string, unknown> });
    if (this.failCreate) throw this.failCreate;
    return obj as T;
  }

  async patch<T>(
    _ref: ResourceRef,
    ns: string | undefined,
    name: string,
    patch: unknown,
    opts: PatchOptions,
  ): Promise<T> {
    assert.equal(opts.type, "merge");
    await settle();
    this.writes.push({ verb: "patch", ns, name, body: patch as Record<string, unknown> });
    if (this.failPatch) throw this.failPatch;
    return patch as T;
  }
}

const BINDING: KubeObject = {
  apiVersion: "extension.lucheng0127/v1",
  kind: "EipBinding",
  metadata: { name: "web", namespace: "vms", uid: "uid-1", resourceVersion: "42" },
};
const NODE: KubeObject = {
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: "node-1", uid: "uid-n" },
};

function setup(opts: { burst?: number; refillMs?: number } = {}) {
  const clock = new FakeClock();
  const api = new FakeEvents();
  const recorder = new EventRecorder(api, {
    controller: "kube-eip.lucheng0127/eip-operator",
    instance: "eip-operator-7d9f-abcde",
    logger: silent,
    clock,
    seriesIntervalMs: 10_000,
    ...opts,
  });
  return { clock, api, recorder };
}

test("an Event about the object, as events.k8s.io/v1 wants it; a cluster-scoped object's goes to default", async () => {
  const { clock, api, recorder } = setup();
  recorder.record(BINDING, "Normal", "Bound", "Bind", "EIP 192.168.18.100 bound on node-1");
  recorder.record(NODE, "Warning", "AgentUnreachable", "Sync", "agent 172.16.0.11:6127 refused");
  await recorder.flush();
  assert.equal(api.writes.length, 2);
  const [first, second] = api.writes;
  const body = first?.body ?? {};
  assert.equal(first?.verb, "create");
  assert.equal(first?.ns, "vms");
  assert.match((body["metadata"] as { name: string }).name, /^web\.[0-9a-f]{16}$/);
  assert.deepEqual(
    { ...body, metadata: undefined },
    {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: undefined,
      eventTime: new Date(clock.now()).toISOString().replace("Z", "000Z"),
      reportingController: "kube-eip.lucheng0127/eip-operator",
      reportingInstance: "eip-operator-7d9f-abcde",
      action: "Bind",
      reason: "Bound",
      note: "EIP 192.168.18.100 bound on node-1",
      type: "Normal",
      regarding: {
        apiVersion: "extension.lucheng0127/v1",
        kind: "EipBinding",
        name: "web",
        namespace: "vms",
        uid: "uid-1",
        resourceVersion: "42",
      },
    },
  );
  assert.equal(second?.ns, "default");
  assert.deepEqual(second?.body["regarding"], {
    apiVersion: "v1",
    kind: "Node",
    name: "node-1",
    uid: "uid-n",
  });
});

test("repeats become one Event's series, written at most once per interval with the count so far", async () => {
  const { clock, api, recorder } = setup();
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused: EIP in use");
  await settle();
  assert.equal(api.writes.length, 1);
  const name = (api.writes[0]?.body["metadata"] as { name: string }).name;
  for (let i = 0; i < 5; i++) {
    await clock.advance(1000);
    recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused: EIP in use");
  }
  assert.equal(api.writes.length, 1, "nothing written before the interval");
  await clock.advance(5000);
  assert.equal(api.writes.length, 2);
  assert.deepEqual(api.writes[1], {
    verb: "patch",
    ns: "vms",
    name,
    body: {
      series: {
        count: 6,
        lastObservedTime: new Date(clock.now() - 5000).toISOString().replace("Z", "000Z"),
      },
    },
  });
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused: EIP in use");
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused: EIP in use");
  await recorder.flush();
  assert.equal(api.writes.length, 3);
  assert.deepEqual((api.writes[2]?.body["series"] as { count: number }).count, 8);
  await clock.advance(60_000);
  assert.equal(api.writes.length, 3, "nothing more without repeats");
});

test("another note, type or object is another Event; a repeat after the window starts a new one", async () => {
  const { clock, api, recorder } = setup();
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused");
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent unreachable");
  recorder.record(BINDING, "Normal", "BindFailed", "Bind", "agent refused");
  recorder.record(
    { ...BINDING, metadata: { ...BINDING.metadata, name: "db", uid: "uid-2" } },
    "Warning",
    "BindFailed",
    "Bind",
    "agent refused",
  );
  await recorder.flush();
  assert.deepEqual(
    api.writes.map((w) => w.verb),
    ["create", "create", "create", "create"],
  );
  await clock.advance(6 * 60_000);
  recorder.record(BINDING, "Warning", "BindFailed", "Bind", "agent refused");
  await recorder.flush();
  assert.equal(api.writes.length, 5);
  assert.equal(api.writes[4]?.verb, "create", "6 minutes of quiet close the series");
});

test("new Events are rate-limited per object: a burst, then one per refill period", async () => {
  const { clock, api, recorder } = setup({ burst: 3, refillMs: 60_000 });
  for (let i = 0; i < 5; i++) recorder.record(BINDING, "Normal", "Step", "Sync", `step ${i}`);
  recorder.record(NODE, "Normal", "Step", "Sync", "node step");
  await recorder.flush();
  assert.deepEqual(
    api.writes.map((w) => w.body["note"]),
    ["step 0", "step 1", "step 2", "node step"],
  );
  assert.equal(recorder.dropped, 2);
  await clock.advance(60_000);
  recorder.record(BINDING, "Normal", "Step", "Sync", "step 5");
  recorder.record(BINDING, "Normal", "Step", "Sync", "step 6");
  await recorder.flush();
  assert.deepEqual(
    api.writes.slice(4).map((w) => w.body["note"]),
    ["step 5"],
  );
  recorder.record(BINDING, "Normal", "Step", "Sync", "step 0");
  await recorder.flush();
  assert.equal(api.writes.at(-1)?.verb, "patch", "a repeat is a series update, never limited");
});

test("record() never throws nor waits; failures are dropped; a series whose Event vanished is created again", async () => {
  const { clock, api, recorder } = setup();
  recorder.record({ metadata: { name: "no-kind" } }, "Normal", "X", "Y", "z");
  assert.equal(recorder.dropped, 1);
  assert.equal(api.writes.length, 0);

  api.failCreate = new Error("connect ECONNREFUSED");
  recorder.record(BINDING, "Normal", "Bound", "Bind", "first");
  await recorder.flush();
  api.failCreate = undefined;
  recorder.record(BINDING, "Normal", "Bound", "Bind", "first");
  await recorder.flush();
  assert.deepEqual(
    api.writes.map((w) => [w.verb, w.body["series"]]),
    [
      ["create", undefined],
      ["create", undefined],
    ],
    "an Event never created is not a series",
  );

  const name = (api.writes[1]?.body["metadata"] as { name: string }).name;
  api.failPatch = new KubeApiError(404, "NotFound", "events not found");
  recorder.record(BINDING, "Normal", "Bound", "Bind", "first");
  await clock.advance(10_000);
  assert.equal(api.writes.length, 4);
  const [patch, create] = api.writes.slice(2);
  assert.equal(patch?.verb, "patch");
  assert.equal(create?.verb, "create");
  assert.equal((create?.body["metadata"] as { name: string }).name, name);
  assert.equal((create?.body["series"] as { count: number }).count, 2);
  recorder.record(BINDING, "Normal", "Bound", "Bind", "first");
  api.failPatch = undefined;
  await recorder.flush();
  assert.deepEqual(api.writes.at(-1)?.body["series"], {
    count: 3,
    lastObservedTime: new Date(clock.now()).toISOString().replace("Z", "000Z"),
  });
});

test("a long note is cut to the apiserver's 1 kB without splitting a character", async () => {
  const { api, recorder } = setup();
  recorder.record(BINDING, "Warning", "Failed", "Bind", "é".repeat(600));
  await recorder.flush();
  const note = api.writes[0]?.body["note"] as string;
  assert.equal(Buffer.byteLength(note), 1024);
  assert.equal(note, "é".repeat(512));
});
