import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeClient, NODES } from "./client.js";
import { parseKubeConfig, readKubeConfigFile } from "./config.js";
import { execCredentialSource } from "./exec-credential.js";

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/**
 * A real exec plugin: a node script that counts its runs in a file, keeps the
 * KUBERNETES_EXEC_INFO and the env it was given, and prints an ExecCredential with the
 * token tok-<run> (and PLUGIN_EXPIRES as its expirationTimestamp, when set).
 */
function plugin(): { dir: string; script: string; runs: () => number; info: () => unknown } {
  const dir = mkdtempSync(join(tmpdir(), "kube-exec-test-"));
  dirs.push(dir);
  const script = join(dir, "plugin.mjs");
  writeFileSync(
    script,
    `#!${process.execPath}
import { readFileSync, writeFileSync } from "node:fs";
const dir = ${JSON.stringify(dir)};
let n = 0;
try { n = Number(readFileSync(dir + "/runs", "utf8")); } catch {}
n += 1;
writeFileSync(dir + "/runs", String(n));
writeFileSync(dir + "/info", JSON.stringify({ info: JSON.parse(process.env.KUBERNETES_EXEC_INFO), env: process.env.PLUGIN_GREETING ?? null }));
const status = { token: "tok-" + n };
if (process.env.PLUGIN_EXPIRES) status.expirationTimestamp = process.env.PLUGIN_EXPIRES;
process.stdout.write(JSON.stringify({ apiVersion: process.env.PLUGIN_API ?? "client.authentication.k8s.io/v1", kind: "ExecCredential", status }));
`,
    { mode: 0o755 },
  );
  return {
    dir,
    script,
    runs: () => {
      try {
        return Number(readFileSync(join(dir, "runs"), "utf8"));
      } catch {
        return 0;
      }
    },
    info: () => JSON.parse(readFileSync(join(dir, "info"), "utf8")) as unknown,
  };
}

const kubeconfig = (server: string, exec: Record<string, unknown>) =>
  JSON.stringify({
    clusters: [{ name: "eks", cluster: { server } }],
    users: [{ name: "iam", user: { exec } }],
    contexts: [{ name: "x", context: { cluster: "eks", user: "iam" } }],
    "current-context": "x",
  });

test("exec plugin: its token is sent, kept while valid, and fetched anew after a 401", async () => {
  const p = plugin();
  const seen: string[] = [];
  let refuse = "";
  const server = createServer((req: IncomingMessage, res) => {
    const auth = req.headers.authorization ?? "";
    seen.push(auth);
    if (auth === refuse) return res.writeHead(401).end();
    res.writeHead(200, { "Content-Type": "application/json" }).end('{"kind":"Node"}');
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const server_ = `http://127.0.0.1:${port}`;
  const cfg = parseKubeConfig(
    kubeconfig(server_, {
      apiVersion: "client.authentication.k8s.io/v1",
      command: process.execPath,
      args: [p.script],
      env: [{ name: "PLUGIN_GREETING", value: "hello" }],
      provideClusterInfo: true,
      interactiveMode: "Never",
    }),
    { baseDir: p.dir },
  );
  let refreshes = 0;
  const refresh = cfg.refreshCredentials;
  assert.ok(refresh, "a plugin's token is renewed before requests");
  const counted = {
    ...cfg,
    refreshCredentials: () => {
      refreshes++;
      return refresh();
    },
  };
  const client = new KubeClient(counted, { timeoutMs: 5000 });
  try {
    assert.equal(
      p.runs(),
      1,
      "run once when the kubeconfig is read (a broken plugin fails at start)",
    );
    await client.get(NODES, undefined, "n1");
    await client.get(NODES, undefined, "n1");
    assert.deepEqual(seen, ["Bearer tok-1", "Bearer tok-1"]);
    assert.equal(p.runs(), 1, "kept: no expirationTimestamp, no 401");
    assert.deepEqual(p.info(), {
      info: {
        apiVersion: "client.authentication.k8s.io/v1",
        kind: "ExecCredential",
        spec: { interactive: false, cluster: { server: server_ } },
      },
      env: "hello",
    });

    refuse = "Bearer tok-1";
    await assert.rejects(client.get(NODES, undefined, "n1"), { status: 401 });
    await client.get(NODES, undefined, "n1");
    assert.equal(seen.at(-1), "Bearer tok-2", "after the 401 the plugin ran again");
    assert.equal(p.runs(), 2);
    assert.equal(refreshes, 4, "the client awaits the renewal before each request");
  } finally {
    client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

test("exec plugin: kept until its expirationTimestamp (fake clock), v1beta1", async () => {
  const p = plugin();
  let now = Date.parse("2030-01-01T00:00:00Z");
  const source = execCredentialSource(
    {
      apiVersion: "client.authentication.k8s.io/v1beta1",
      command: process.execPath,
      args: [p.script],
      env: [
        { name: "PLUGIN_EXPIRES", value: "2030-01-01T00:15:00Z" },
        { name: "PLUGIN_API", value: "client.authentication.k8s.io/v1beta1" },
      ],
    },
    { where: "user iam", cluster: { server: "https://x" }, now: () => now },
  );
  assert.equal(source.get().token, "tok-1");
  now += 14 * 60_000;
  assert.equal(source.get().token, "tok-1", "still valid");
  assert.deepEqual(
    (p.info() as { info: unknown }).info,
    {
      apiVersion: "client.authentication.k8s.io/v1beta1",
      kind: "ExecCredential",
      spec: { interactive: false },
    },
    "no cluster without provideClusterInfo",
  );
  now += 60_000;
  assert.equal(source.current(), undefined, "expired");
  assert.equal(source.get().token, "tok-2", "expired: run again");
  assert.equal(p.runs(), 2);
  source.invalidate(); // as after a 401
  now = Date.parse("2030-01-01T00:01:00Z");
  await Promise.all([source.refresh(), source.refresh()]);
  assert.equal(source.current()?.token, "tok-3", "renewed in the background");
  assert.equal(p.runs(), 3, "one run for both");
});

test("exec plugin: what it refuses, saying what is wrong", () => {
  const p = plugin();
  const base = {
    apiVersion: "client.authentication.k8s.io/v1",
    command: process.execPath,
    args: [p.script],
  };
  const load = (exec: Record<string, unknown>) =>
    parseKubeConfig(kubeconfig("https://h:6443", exec), { baseDir: p.dir });
  assert.throws(
    () =>
      load({
        ...base,
        command: join(p.dir, "aws-iam-authenticator"),
        installHint: "install it from example.com",
      }),
    /aws-iam-authenticator not found\ninstall it from example.com/,
  );
  assert.throws(
    () => load({ ...base, apiVersion: "client.authentication.k8s.io/v1alpha1" }),
    /apiVersion .*v1alpha1 is not one of/,
  );
  assert.throws(
    () =>
      load({
        ...base,
        env: [{ name: "PLUGIN_API", value: "client.authentication.k8s.io/v1beta1" }],
      }),
    /answered apiVersion client.authentication.k8s.io\/v1beta1, not client.authentication.k8s.io\/v1/,
  );
  assert.throws(() => load({ ...base, args: ["-e", "process.exit(3)"] }), /failed: Command failed/);
  assert.throws(
    () => load({ ...base, args: ["-e", "console.log('hi')"] }),
    /printed no JSON ExecCredential/,
  );
  assert.throws(() => load({ ...base, interactiveMode: "Always" }), /needs a terminal/);
  assert.throws(() => load({ ...base, command: "" }), /has no command/);
  assert.equal(p.runs(), 1, "only the one with the wrong apiVersion answered ran the script");
});

test("exec plugin: a shell never sees the arguments", () => {
  const p = plugin();
  const marker = join(p.dir, "pwned");
  const cfg = parseKubeConfig(
    kubeconfig("https://h:6443", {
      apiVersion: "client.authentication.k8s.io/v1",
      command: process.execPath,
      args: [p.script, `; touch ${marker}`, `$(touch ${marker})`],
    }),
    { baseDir: p.dir },
  );
  assert.equal(cfg.token?.(), "tok-1");
  assert.throws(() => readFileSync(marker), /ENOENT/);
});

test("exec plugin: a command with a path is found next to the kubeconfig; one that hangs is stopped", async () => {
  const p = plugin();
  writeFileSync(
    join(p.dir, "config"),
    kubeconfig("https://h:6443", {
      apiVersion: "client.authentication.k8s.io/v1",
      command: "./plugin.mjs",
    }),
  );
  assert.equal(readKubeConfigFile(join(p.dir, "config")).token?.(), "tok-1");
  const hung = execCredentialSource(
    {
      apiVersion: "client.authentication.k8s.io/v1",
      command: process.execPath,
      args: ["-e", "setTimeout(() => {}, 60000)"],
    },
    { where: "user iam", cluster: { server: "https://h:6443" }, timeoutMs: 300 },
  );
  assert.throws(() => hung.get(), /user iam: exec: .*node failed: no answer within 300 ms/);
  await assert.rejects(hung.refresh(), /user iam: exec: .*node failed: no answer within 300 ms/);
});
