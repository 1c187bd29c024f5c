// The operator's records about an EipBinding name it: whatever logs during its reconcile
// (the reconciler, the controller's failure record) carries its namespace and name, and a
// failure its error's stack.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { AgentPool } from "./agents.js";
import { type CacheEvent, Controller, type KeyQueue, type ObjectCache } from "./controller.js";
import { OperatorMetrics } from "./metrics.js";
import { FINALIZER, type EipBinding, type KubeNode, type Vmi } from "./types.js";
import { createLogger } from "../common/logger.js";

function cache<T>(items: Record<string, T>): ObjectCache<T> {
  return {
    synced: true,
    get: (key: string) => items[key],
    list: () => Object.values(items),
    onEvent: (_handler: (ev: CacheEvent<T>) => void) => {},
  };
}

test("every record of a reconcile carries the binding's namespace and name; a failure its stack", async () => {
  const lines: string[] = [];
  const logger = createLogger("eip-operator", "info", { write: (l: string) => void lines.push(l) });
  // Bound on a node that is gone, to a VMI that is gone: unbind (nothing to do: logged),
  // then the status write fails.
  const web: EipBinding = {
    metadata: { name: "web", namespace: "vms", finalizers: [FINALIZER], creationTimestamp: "t" },
    spec: { eipAddr: "192.168.18.100", vmiName: "vm" },
    status: { eipAddr: "192.168.18.100", nodeName: "node9", vmiAddress: "10.244.1.10" },
  };
  let gets = 0;
  const { promise: done, resolve: drained } = Promise.withResolvers<void>();
  const queue: KeyQueue = {
    add: () => {},
    addRateLimited: () => {},
    forget: () => {},
    done: () => {},
    length: 0,
    get: async () => {
      if (gets++ === 0) return "vms/web";
      drained();
      return undefined;
    },
  };
  const controller = new Controller({
    bindings: cache<EipBinding>({ "vms/web": web }),
    vmis: cache<Vmi>({}),
    nodes: cache<KubeNode>({}),
    queue,
    agents: {} as AgentPool,
    writer: {
      patchStatus: async () => {
        throw new Error("the apiserver is down");
      },
      setFinalizers: async () => {},
    },
    events: { record: () => {} },
    metrics: new OperatorMetrics(),
    logger,
    workers: 1,
    antiEntropyMs: 60_000,
    nodeNotReadyGraceMs: 300_000,
  });
  const running = controller.run();
  await done;
  controller.stop();
  await running;

  const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(records.length >= 2, lines.join(""));
  for (const r of records) {
    assert.equal(r["namespace"], "vms", JSON.stringify(r));
    assert.equal(r["name"], "web", JSON.stringify(r));
    assert.match(String(r["level"]), /^(info|warn|error)$/);
  }
  const failed = records.find((r) => r["msg"] === "reconcile failed; retrying");
  assert.equal(failed?.["level"], "error");
  assert.match(
    (failed?.["err"] as { stack?: string } | undefined)?.stack ?? "",
    /^Error: the apiserver is down\n\s+at /,
  );
});
