import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import {
  EIPBINDINGS,
  EVENTS,
  KubeApiError,
  KubeClient,
  LEASES,
  NODES,
  VMIS,
  WatchDecoder,
  isAlreadyExists,
  isConflict,
  isGone,
  isNotFound,
  microTime,
  parseWatchLine,
  resourcePath,
  type WatchEventType,
} from "./client.js";

test("resourcePath: core and named groups, namespaces, names and subresources escaped", () => {
  assert.equal(resourcePath(NODES), "/api/v1/nodes");
  assert.equal(resourcePath(NODES, { name: "node-1" }), "/api/v1/nodes/node-1");
  assert.equal(resourcePath(NODES, { namespace: "" }), "/api/v1/nodes", "'' is no namespace");
  assert.equal(
    resourcePath(EIPBINDINGS, { namespace: "vms", name: "web", subresource: "status" }),
    "/apis/extension.lucheng0127/v1/namespaces/vms/eipbindings/web/status",
  );
  assert.equal(resourcePath(VMIS), "/apis/kubevirt.io/v1/virtualmachineinstances");
  assert.equal(
    resourcePath(LEASES, { namespace: "kube-eip", name: "eip-operator" }),
    "/apis/coordination.k8s.io/v1/namespaces/kube-eip/leases/eip-operator",
  );
  assert.equal(
    resourcePath(EVENTS, { namespace: "a b", name: "x:y" }),
    "/apis/events.k8s.io/v1/namespaces/a%20b/events/x%3Ay",
  );
  assert.throws(() => resourcePath(NODES, { namespace: "x" }), /nodes are not namespaced/);
  assert.throws(() => resourcePath(NODES, { name: "a/b" }), /bad name "a\/b"/);
  assert.throws(() => resourcePath(NODES, { name: ".." }), /bad name/);
  assert.throws(() => resourcePath(NODES, { subresource: "status" }), /needs a name/);
});

test("KubeApiError from a Status; the helpers tell NotFound, Conflict, AlreadyExists, Gone apart", () => {
  const status = (code: number, reason: string) =>
    KubeApiError.fromResponse(
      code,
      {
        kind: "Status",
        status: "Failure",
        code,
        reason,
        message: `m ${reason}`,
        details: { name: "x" },
      },
      "GET /x",
    );
  const notFound = status(404, "NotFound");
  assert.equal(notFound.message, "GET /x: m NotFound");
  assert.deepEqual(notFound.details, { name: "x" });
  assert.ok(isNotFound(notFound) && !isConflict(notFound));
  assert.ok(isConflict(status(409, "Conflict")) && !isAlreadyExists(status(409, "Conflict")));
  assert.ok(isAlreadyExists(status(409, "AlreadyExists")));
  assert.ok(!isConflict(status(409, "AlreadyExists")));
  assert.ok(isGone(status(410, "Expired")) && isGone(status(410, "Gone")));
  assert.ok(!isNotFound(new Error("404")), "only KubeApiErrors");
  const proxy = KubeApiError.fromResponse(502, "<html>bad gateway</html>", "GET /y");
  assert.equal(proxy.status, 502);
  assert.equal(proxy.reason, "Unknown");
  assert.match(proxy.message, /HTTP 502 <html>bad gateway/);
  assert.equal(KubeApiError.fromResponse(404, "", "GET /z").reason, "NotFound");
});

test("microTime: six fractional digits, as the apiserver's MicroTime parses them", () => {
  assert.equal(microTime(Date.UTC(2025, 0, 2, 3, 4, 5, 678)), "2025-01-02T03:04:05.678000Z");
});

const STREAM = [
  { type: "ADDED", object: { metadata: { name: "a", resourceVersion: "10" }, note: "héllo ✓" } },
  { type: "BOOKMARK", object: { metadata: { resourceVersion: "11" } } },
  { type: "MODIFIED", object: { metadata: { name: "a", resourceVersion: "12" }, note: "日本" } },
  { type: "DELETED", object: { metadata: { name: "a", resourceVersion: "13" } } },
]
  .map((e) => JSON.stringify(e) + "\n")
  .join("");

test("the watch decoder gives the same events however the stream is cut, even inside a UTF-8 character", () => {
  const bytes = Buffer.from(STREAM);
  const whole = new WatchDecoder().push(bytes).map(parseWatchLine);
  assert.deepEqual(
    whole.map((e) => e.type),
    ["ADDED", "BOOKMARK", "MODIFIED", "DELETED"],
  );
  assert.equal((whole[0]?.object as { note: string }).note, "héllo ✓");
  for (let cut = 1; cut < bytes.length; cut++) {
    for (const second of [cut + 1, cut + 7, bytes.length]) {
      const d = new WatchDecoder();
      const events = [
        ...d.push(bytes.subarray(0, cut)),
        ...d.push(bytes.subarray(cut, second)),
        ...d.push(bytes.subarray(second)),
        ...d.end(),
      ].map(parseWatchLine);
      assert.deepEqual(events, whole, `cut at ${cut} and ${second}`);
    }
  }
  const unterminated = new WatchDecoder();
  assert.deepEqual(unterminated.push('{"type":"ADDED","object":{"metadata":{"name":"b"}}}'), []);
  assert.deepEqual(unterminated.end().map(parseWatchLine), [
    { type: "ADDED", object: { metadata: { name: "b" } } },
  ]);
});

test("an ERROR event is raised as its KubeApiError; garbage is an error, not an event", () => {
  const expired = JSON.stringify({
    type: "ERROR",
    object: {
      kind: "Status",
      apiVersion: "v1",
      status: "Failure",
      message: "too old resource version: 5 (42)",
      reason: "Expired",
      code: 410,
    },
  });
  assert.throws(
    () => parseWatchLine(expired),
    (err: unknown) =>
      err instanceof KubeApiError &&
      isGone(err) &&
      err.reason === "Expired" &&
      /too old/.test(err.message),
  );
  assert.throws(() => parseWatchLine("{not json"), /not JSON/);
  assert.throws(() => parseWatchLine('{"type":"SOMETHING","object":{}}'), /not an event/);
  assert.throws(() => parseWatchLine('{"type":"ADDED"}'), /without an object/);
});

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

/** A plain-HTTP stand-in for the apiserver on 127.0.0.1:0, answering from `handler`. */
describe("KubeClient over HTTP against a stand-in apiserver", () => {
  let server: Server;
  let handler: Handler = (_req, _body, res) => res.writeHead(500).end();
  const seen: { method: string; url: string; headers: IncomingMessage["headers"]; body: string }[] =
    [];
  let tokens = 0;
  let client: KubeClient;

  before(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString();
        seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
        handler(req, body, res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    client = new KubeClient(
      { server: `http://127.0.0.1:${port}`, token: () => `token-${++tokens}` },
      { userAgent: "kube-eip-test", timeoutMs: 5000 },
    );
  });

  after(async () => {
    client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const json = (res: ServerResponse, code: number, obj: unknown) =>
    res.writeHead(code, { "Content-Type": "application/json" }).end(JSON.stringify(obj));
  const status = (code: number, reason: string) => ({
    kind: "Status",
    apiVersion: "v1",
    status: "Failure",
    code,
    reason,
    message: reason.toLowerCase(),
  });

  test("list follows continue pages, and names the items' kind; the token is asked each time", async () => {
    seen.length = 0;
    handler = (req, _body, res) => {
      const url = new URL(req.url ?? "", "http://x");
      const page = url.searchParams.get("continue") ?? "";
      const next = { "": "p2", p2: "p3", p3: "" }[page] ?? "";
      json(res, 200, {
        kind: "NodeList",
        apiVersion: "v1",
        metadata: { resourceVersion: "77", ...(next ? { continue: next } : {}) },
        items: [{ metadata: { name: `n-${page || "p1"}` } }],
      });
    };
    const { items, resourceVersion } = await client.list<{ kind: string; apiVersion: string }>(
      NODES,
      { labelSelector: "role=eip", limit: 1 },
    );
    assert.equal(resourceVersion, "77");
    assert.deepEqual(items, [
      { metadata: { name: "n-p1" }, kind: "Node", apiVersion: "v1" },
      { metadata: { name: "n-p2" }, kind: "Node", apiVersion: "v1" },
      { metadata: { name: "n-p3" }, kind: "Node", apiVersion: "v1" },
    ]);
    assert.deepEqual(
      seen.map((s) => s.url),
      [
        "/api/v1/nodes?labelSelector=role%3Deip&limit=1",
        "/api/v1/nodes?labelSelector=role%3Deip&limit=1&continue=p2",
        "/api/v1/nodes?labelSelector=role%3Deip&limit=1&continue=p3",
      ],
    );
    const auth = seen.map((s) => s.headers.authorization);
    assert.equal(new Set(auth).size, 3, "a fresh token per request");
    assert.ok(auth.every((a) => /^Bearer token-\d+$/.test(a ?? "")));
    assert.equal(seen[0]?.headers["user-agent"], "kube-eip-test");
  });

  test("a continue token that expires midway restarts the list in one piece", async () => {
    seen.length = 0;
    handler = (req, _body, res) => {
      const url = new URL(req.url ?? "", "http://x");
      if (url.searchParams.get("continue") === "old") return json(res, 410, status(410, "Expired"));
      if (url.searchParams.has("limit")) {
        return json(res, 200, {
          kind: "List",
          metadata: { continue: "old" },
          items: [{ metadata: { name: "a" } }],
        });
      }
      json(res, 200, {
        kind: "List",
        metadata: { resourceVersion: "9" },
        items: [{ metadata: { name: "a" } }, { metadata: { name: "b" } }],
      });
    };
    const { items } = await client.list<{ metadata: { name: string } }>(EIPBINDINGS, {
      namespace: "vms",
      limit: 1,
    });
    assert.deepEqual(
      items.map((i) => i.metadata.name),
      ["a", "b"],
    );
    assert.equal(seen.at(-1)?.url, "/apis/extension.lucheng0127/v1/namespaces/vms/eipbindings");
  });

  test("answers other than 2xx are KubeApiErrors; verbs send what the apiserver expects", async () => {
    seen.length = 0;
    handler = (req, _body, res) => {
      if (req.method === "GET") return json(res, 404, status(404, "NotFound"));
      if (req.method === "POST") return json(res, 409, status(409, "AlreadyExists"));
      if (req.method === "PUT") return json(res, 409, status(409, "Conflict"));
      json(res, 200, { ok: req.method });
    };
    await assert.rejects(client.get(NODES, undefined, "n1"), (e: unknown) => isNotFound(e));
    await assert.rejects(client.create(EIPBINDINGS, "vms", {}), (e: unknown) => isAlreadyExists(e));
    await assert.rejects(
      client.replace(EIPBINDINGS, "vms", "web", {}, { subresource: "status" }),
      (e: unknown) => isConflict(e),
    );
    for (const [type, contentType] of [
      ["merge", "application/merge-patch+json"],
      ["json", "application/json-patch+json"],
      ["strategic", "application/strategic-merge-patch+json"],
    ] as const) {
      assert.deepEqual(await client.patch(NODES, undefined, "n1", { a: 1 }, { type }), {
        ok: "PATCH",
      });
      assert.equal(seen.at(-1)?.headers["content-type"], contentType);
    }
    await client.patch(
      EIPBINDINGS,
      "vms",
      "web",
      { spec: {} },
      { type: "apply", fieldManager: "op", force: true },
    );
    assert.equal(
      seen.at(-1)?.url,
      "/apis/extension.lucheng0127/v1/namespaces/vms/eipbindings/web?fieldManager=op&force=true",
    );
    assert.equal(seen.at(-1)?.headers["content-type"], "application/apply-patch+yaml");
    await client.delete(EIPBINDINGS, "vms", "web", {
      preconditions: { uid: "u1", resourceVersion: "5" },
    });
    assert.equal(seen.at(-1)?.method, "DELETE");
    assert.deepEqual(JSON.parse(seen.at(-1)?.body ?? ""), {
      apiVersion: "v1",
      kind: "DeleteOptions",
      preconditions: { uid: "u1", resourceVersion: "5" },
    });
    await assert.rejects(
      client.patch(NODES, undefined, "n1", {}, { type: "apply" }),
      /needs a fieldManager/,
    );
    await assert.rejects(
      client.patch(NODES, undefined, "n1", {}, { type: "merge", force: true }),
      /apply patches only/,
    );
    await assert.rejects(client.get(EIPBINDINGS, undefined, "web"), /need a namespace/);
    await assert.rejects(client.get(NODES, "vms", "n1"), /not namespaced/);
  });

  test("a request aborted by its signal rejects with the signal's reason", async () => {
    handler = () => undefined; // never answers
    const ctl = new AbortController();
    const pending = client.get(NODES, undefined, "slow", { signal: ctl.signal });
    setTimeout(() => ctl.abort(new Error("gave up")), 20);
    await assert.rejects(pending, /gave up/);
  });

  test("watch: events in order from a stream cut mid-line, resolves when the server ends it", async () => {
    seen.length = 0;
    handler = (_req, _body, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      const bytes = Buffer.from(STREAM);
      const cuts = [0, 5, 60, 61, 130, bytes.length];
      let i = 0;
      const next = () => {
        const from = cuts[i] ?? 0;
        const to = cuts[++i];
        if (to === undefined) return res.end();
        res.write(bytes.subarray(from, to));
        setTimeout(next, 5);
      };
      next();
    };
    const got: [WatchEventType, string | undefined][] = [];
    await client.watch<{ metadata: { resourceVersion?: string } }>(
      EIPBINDINGS,
      { namespace: "vms", resourceVersion: "9", allowWatchBookmarks: true, timeoutSeconds: 60 },
      (type, obj) => got.push([type, obj.metadata.resourceVersion]),
      new AbortController().signal,
    );
    assert.deepEqual(got, [
      ["ADDED", "10"],
      ["BOOKMARK", "11"],
      ["MODIFIED", "12"],
      ["DELETED", "13"],
    ]);
    assert.equal(
      seen[0]?.url,
      "/apis/extension.lucheng0127/v1/namespaces/vms/eipbindings?watch=true&resourceVersion=9&allowWatchBookmarks=true&timeoutSeconds=60",
    );
  });

  test("watch: an ERROR event rejects with its KubeApiError after the events before it, even in the same chunk", async () => {
    handler = (_req, _body, res) => {
      res.writeHead(200);
      // One write: the two lines arrive in one chunk.
      res.end(
        JSON.stringify({ type: "ADDED", object: { metadata: { name: "a" } } }) +
          "\n" +
          JSON.stringify({ type: "ERROR", object: status(410, "Expired") }) +
          "\n",
      );
    };
    const got: string[] = [];
    await assert.rejects(
      client.watch(
        NODES,
        { resourceVersion: "1", allowWatchBookmarks: true, timeoutSeconds: 60 },
        (type) => got.push(type),
        new AbortController().signal,
      ),
      (e: unknown) => isGone(e),
    );
    assert.deepEqual(got, ["ADDED"]);
  });

  test("watch: a refusal is a KubeApiError; an abort resolves; a broken stream rejects", async () => {
    const opts = { resourceVersion: "1", allowWatchBookmarks: true, timeoutSeconds: 60 };
    handler = (_req, _body, res) => json(res, 403, status(403, "Forbidden"));
    await assert.rejects(
      client.watch(NODES, opts, () => undefined, new AbortController().signal),
      (e: unknown) => e instanceof KubeApiError && e.status === 403 && e.reason === "Forbidden",
    );

    handler = (_req, _body, res) => {
      res.writeHead(200);
      res.write(JSON.stringify({ type: "ADDED", object: { metadata: { name: "a" } } }) + "\n");
    };
    const ctl = new AbortController();
    const got: string[] = [];
    await client.watch(
      NODES,
      opts,
      (type) => {
        got.push(type);
        ctl.abort();
      },
      ctl.signal,
    );
    assert.deepEqual(got, ["ADDED"], "resolved by the abort, after the event");

    handler = (req, _body, res) => {
      res.writeHead(200);
      res.write('{"type":"ADDED","obj');
      setTimeout(() => req.socket.destroy(), 10);
    };
    await assert.rejects(
      client.watch(NODES, opts, () => undefined, new AbortController().signal),
      /broke off|socket hang up|ECONNRESET|aborted/,
    );
  });
});
