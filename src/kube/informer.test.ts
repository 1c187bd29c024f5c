import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import {
  EIPBINDINGS,
  KubeApiError,
  type ListOptions,
  type ListResult,
  type WatchEventType,
  type WatchOptions,
} from "./client.js";
import { FakeClock, settle } from "../common/fake-clock.js";
import {
  Informer,
  objectKey,
  type InformerEvent,
  type KubeObject,
  type ListWatchClient,
} from "./informer.js";

const silent = pino({ level: "silent" });

interface Binding extends KubeObject {
  spec: { vmiName: string };
}

function binding(name: string, rv: string, vmiName = name): Binding {
  return { metadata: { name, namespace: "vms", resourceVersion: rv }, spec: { vmiName } };
}

/** A bookmark as kube-apiserver sends it: no name, only the resourceVersion (and an annotation). */
function bookmark(rv: string): KubeObject {
  return {
    kind: "EipBinding",
    apiVersion: "extension.lucheng0127/v1",
    metadata: { resourceVersion: rv, annotations: { "k8s.io/initial-events-end": "true" } },
  } as unknown as KubeObject;
}

/** One watch the informer opened: the test sends events, ends or breaks it. */
interface FakeWatch {
  readonly opts: WatchOptions;
  readonly signal: AbortSignal;
  send(type: WatchEventType, obj: KubeObject): void;
  end(): void;
  fail(err: Error): void;
}

/** A ListWatchClient whose list answers `objects` (or the next queued error) and whose watches the test drives. */
class FakeApi implements ListWatchClient {
  objects: Binding[] = [];
  resourceVersion = "1";
  readonly listErrors: Error[] = [];
  readonly lists: ListOptions[] = [];
  readonly watches: FakeWatch[] = [];

  async list<T>(_ref: unknown, opts: ListOptions = {}): Promise<ListResult<T>> {
    this.lists.push(opts);
    const err = this.listErrors.shift();
    if (err) throw err;
    return { items: structuredClone(this.objects) as T[], resourceVersion: this.resourceVersion };
  }

  watch<T>(
    _ref: unknown,
    opts: WatchOptions,
    onEvent: (type: WatchEventType, obj: T) => void,
    signal: AbortSignal,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      signal.addEventListener("abort", () => resolve(), { once: true });
      this.watches.push({
        opts,
        signal,
        // As KubeClient.watch: a handler that throws ends the watch with its error.
        send: (type, obj) => {
          try {
            onEvent(type, structuredClone(obj) as T);
          } catch (err) {
            reject(err as Error);
          }
        },
        end: resolve,
        fail: reject,
      });
    });
  }

  get current(): FakeWatch {
    return this.watches.at(-1) ?? assert.fail("no watch open");
  }
}

function setup(opts: { silenceTimeoutMs?: number } = {}) {
  const api = new FakeApi();
  const clock = new FakeClock();
  const informer = new Informer<Binding>(api, EIPBINDINGS, {
    namespace: "vms",
    logger: silent,
    name: "eipbindings",
    watchTimeoutSec: 60,
    backoffBaseMs: 1000,
    backoffMaxMs: 8000,
    clock,
    random: () => 0.5,
    ...opts,
  });
  const events: string[] = [];
  informer.onEvent((ev: InformerEvent<Binding>) =>
    events.push(
      `${ev.type} ${ev.key}@${ev.obj.metadata.resourceVersion}${ev.old ? ` (was ${ev.old.metadata.resourceVersion})` : ""}`,
    ),
  );
  return { api, clock, informer, events };
}

const state = (informer: Informer<Binding>) =>
  informer
    .list()
    .map((b) => `${objectKey(b)}@${b.metadata.resourceVersion}`)
    .sort();

test("objectKey: namespace/name, or the name alone", () => {
  assert.equal(objectKey(binding("web", "1")), "vms/web");
  assert.equal(objectKey({ metadata: { name: "node-1" } }), "node-1");
});

test("list, then watch from the list's resourceVersion: every change in order, the cache in step", async () => {
  const { api, informer, events } = setup();
  let restarted = 0;
  informer.onRestart(() => restarted++);
  api.objects = [binding("a", "5"), binding("b", "6")];
  api.resourceVersion = "10";
  informer.start();
  await informer.waitForSync();
  assert.equal(informer.synced, true);
  assert.deepEqual(events, ["added vms/a@5", "added vms/b@6"]);
  await settle();
  assert.deepEqual(api.current.opts, {
    namespace: "vms",
    resourceVersion: "10",
    allowWatchBookmarks: true,
    timeoutSeconds: 60,
    labelSelector: undefined,
    fieldSelector: undefined,
  });
  assert.equal(api.lists[0]?.namespace, "vms");

  api.current.send("MODIFIED", binding("a", "11"));
  api.current.send("ADDED", binding("c", "12"));
  api.current.send("DELETED", binding("b", "13"));
  // As the apiserver sends it: the kind, a resourceVersion, an annotation, and no name.
  api.current.send("BOOKMARK", bookmark("20"));
  assert.deepEqual(events.slice(2), [
    "modified vms/a@11 (was 5)",
    "added vms/c@12",
    "deleted vms/b@13 (was 6)",
  ]);
  assert.deepEqual(state(informer), ["vms/a@11", "vms/c@12"]);
  assert.equal(informer.get("vms/c")?.metadata.resourceVersion, "12");
  assert.equal(informer.get("vms/b"), undefined);

  assert.equal(informer.restarts, 0, "a bookmark (no name) is no failure");
  // The server ends the watch: the next one starts at the bookmark, without a list.
  api.current.end();
  await settle();
  assert.equal(api.watches.length, 2);
  assert.equal(api.current.opts.resourceVersion, "20");
  assert.equal(api.lists.length, 1);
  assert.equal(informer.restarts, 1);
  assert.equal(restarted, 1, "the restart reported (the metric)");
  assert.equal(informer.relists, 0);
  await informer.stop();
});

test("objects are cached without managedFields, from the list and from the watch", async () => {
  const { api, informer } = setup();
  const managed = (b: Binding) => {
    (b.metadata as { managedFields?: unknown }).managedFields = [
      { manager: "kubectl", operation: "Apply", fieldsV1: { "f:spec": {} } },
    ];
    return b;
  };
  api.objects = [managed(binding("a", "5"))];
  informer.start();
  await informer.waitForSync();
  await settle();
  api.current.send("ADDED", managed(binding("b", "6")));
  for (const key of ["vms/a", "vms/b"]) {
    const cached = informer.get(key);
    assert.ok(cached, key);
    assert.equal("managedFields" in cached.metadata, false, key);
    assert.equal(cached.metadata.resourceVersion !== undefined, true);
  }
  await informer.stop();
});

test("a bookmark without a resourceVersion fails the watch: re-listed, never taken as an object", async () => {
  const { api, clock, informer, events } = setup();
  informer.start();
  await informer.waitForSync();
  await settle();
  api.current.send("BOOKMARK", { metadata: {} } as unknown as KubeObject);
  await settle();
  await clock.advance(2000);
  assert.equal(api.lists.length, 2, "re-listed after the broken watch");
  assert.deepEqual(events, []);
  await informer.stop();
});

test("410 Gone: re-list at once and emit what changed in the gap (adds, modifies, deletes)", async () => {
  const { api, informer, events } = setup();
  api.objects = [binding("keep", "1"), binding("change", "2"), binding("drop", "3")];
  api.resourceVersion = "3";
  informer.start();
  await informer.waitForSync();
  await settle();
  events.length = 0;

  // While the watch was away: change modified, drop deleted, new created, keep untouched.
  api.objects = [binding("keep", "1"), binding("change", "7"), binding("new", "8")];
  api.resourceVersion = "9";
  api.current.fail(new KubeApiError(410, "Expired", "too old resource version"));
  await settle();
  assert.deepEqual(events, [
    "modified vms/change@7 (was 2)",
    "added vms/new@8",
    "deleted vms/drop@3 (was 3)",
  ]);
  assert.deepEqual(state(informer), ["vms/change@7", "vms/keep@1", "vms/new@8"]);
  assert.equal(informer.relists, 1);
  assert.equal(api.current.opts.resourceVersion, "9", "watching again from the new list");
  await informer.stop();
});

test("other failures re-list after a growing backoff, reset once events flow again", async () => {
  const { api, clock, informer, events } = setup();
  let restarted = 0;
  informer.onRestart(() => restarted++);
  api.objects = [binding("a", "1")];
  informer.start();
  await informer.waitForSync();
  await settle();

  api.listErrors.push(new Error("connect ECONNREFUSED"), new Error("connect ECONNREFUSED"));
  api.current.fail(new Error("socket hang up"));
  api.objects = [binding("a", "4")];
  await settle();
  assert.equal(api.lists.length, 1, "no list before the backoff");
  // Base 1 s doubling, the jitter (here 0.5) in the upper half: 750 ms, 1.5 s, 3 s.
  await clock.advance(749);
  assert.equal(api.lists.length, 1);
  await clock.advance(1);
  assert.equal(api.lists.length, 2, "first retry (refused)");
  await clock.advance(1500);
  assert.equal(api.lists.length, 3, "second retry (refused)");
  await clock.advance(2999);
  assert.equal(api.lists.length, 3);
  await clock.advance(1);
  assert.equal(api.lists.length, 4);
  assert.deepEqual(state(informer), ["vms/a@4"]);
  assert.deepEqual(events, ["added vms/a@1", "modified vms/a@4 (was 1)"]);
  assert.equal(informer.relists, 1);
  assert.equal(informer.restarts, 3);
  assert.equal(restarted, 3, "each restart reported (the metric)");

  api.current.send("MODIFIED", binding("a", "5"));
  api.current.fail(new Error("socket hang up"));
  await clock.advance(750);
  assert.equal(api.lists.length, 5, "an event reset the backoff to its base");
  await informer.stop();
});

test("a watch silent past silenceTimeoutMs is restarted from the last resourceVersion", async () => {
  const { api, clock, informer } = setup({ silenceTimeoutMs: 5000 });
  api.resourceVersion = "3";
  informer.start();
  await informer.waitForSync();
  await settle();
  await clock.advance(4000);
  api.current.send("BOOKMARK", bookmark("8"));
  await clock.advance(4000);
  assert.equal(api.watches.length, 1, "a bookmark counts as a sign of life");
  assert.equal(api.current.signal.aborted, false);
  await clock.advance(1000);
  assert.equal(api.watches[0]?.signal.aborted, true, "the silent watch is closed");
  assert.equal(api.watches.length, 2);
  assert.equal(api.current.opts.resourceVersion, "8");
  assert.equal(informer.silences, 1);
  assert.equal(api.lists.length, 1, "no re-list for silence");
  await informer.stop();
  assert.equal(api.current.signal.aborted, true, "stop() closes the watch");
});

test("a watch the server ends at once, again and again, is retried with backoff", async () => {
  const { api, clock, informer } = setup();
  informer.start();
  await informer.waitForSync();
  await settle();
  api.current.end();
  await clock.advance(749);
  assert.equal(api.watches.length, 1, "not re-opened at once");
  await clock.advance(1);
  assert.equal(api.watches.length, 2);
  api.current.end();
  await clock.advance(1499);
  assert.equal(api.watches.length, 2);
  await clock.advance(1);
  assert.equal(api.watches.length, 3);
  await informer.stop();
});

test("indexes follow the cache; a throwing handler disturbs nothing", async () => {
  const { api, informer, events } = setup();
  informer.addIndex("vmi", (b) => [`${b.metadata.namespace}/${b.spec.vmiName}`]);
  informer.onEvent(() => {
    throw new Error("handler bug");
  });
  api.objects = [binding("b1", "1", "vm1"), binding("b2", "2", "vm1"), binding("b3", "3", "vm2")];
  informer.start();
  await informer.waitForSync();
  await settle();
  const names = (vmi: string) =>
    informer
      .byIndex("vmi", vmi)
      .map((b) => b.metadata.name)
      .sort();
  assert.deepEqual(names("vms/vm1"), ["b1", "b2"]);
  api.current.send("MODIFIED", binding("b2", "4", "vm2"));
  api.current.send("DELETED", binding("b1", "5", "vm1"));
  assert.deepEqual(names("vms/vm1"), []);
  assert.deepEqual(names("vms/vm2"), ["b2", "b3"]);
  assert.equal(events.length, 5, "the other handler saw every event");
  assert.throws(() => informer.byIndex("nope", "x"), /no index nope/);
  assert.throws(() => informer.addIndex("late", () => []), /after start/);
  await informer.stop();
});

test("waitForSync rejects when its signal aborts or the informer stops first", async () => {
  const { api, clock, informer } = setup();
  api.listErrors.push(new Error("down"));
  informer.start();
  const ctl = new AbortController();
  const aborted = informer.waitForSync(ctl.signal);
  const stopped = informer.waitForSync();
  ctl.abort();
  await assert.rejects(aborted, /aborted/);
  await clock.advance(10);
  await informer.stop();
  await assert.rejects(stopped, /stopped/);
  assert.equal(informer.synced, false);
});
