import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  fileTokenSource,
  loadKubeConfig,
  namespaceFromServiceAccount,
  parseKubeConfig,
  readKubeConfigFile,
} from "./config.js";

const CA = "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n";
const CERT = "-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n";
const KEY = "-----BEGIN EC PRIVATE KEY-----\nkey\n-----END EC PRIVATE KEY-----\n";
const b64 = (s: string) => Buffer.from(s).toString("base64");

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "kube-config-test-"));
  dirs.push(dir);
  return dir;
}

/** What `kubectl config view --raw` prints for a kubeadm cluster: YAML, *-data fields. */
const YAML_KUBECONFIG = `apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: ${b64(CA)}
    server: https://10.0.0.1:6443/
  name: prod
- cluster:
    server: https://192.0.2.7:6443
    insecure-skip-tls-verify: yes
    tls-server-name: api.example
  name: lab
contexts:
- context:
    cluster: prod
    user: admin
    namespace: eip-system
  name: admin@prod
- context:
    cluster: lab
    user: robot
  name: robot@lab
current-context: admin@prod
preferences: {}
users:
- name: admin
  user:
    client-certificate-data: ${b64(CERT)}
    client-key-data: ${b64(KEY)}
- name: robot
  user:
    token: abc.def.ghi
`;

test("a YAML kubeconfig with embedded data: the current context, or the one asked", () => {
  const cfg = parseKubeConfig(YAML_KUBECONFIG, { baseDir: "/nowhere" });
  assert.equal(cfg.server, "https://10.0.0.1:6443", "the trailing slash goes");
  assert.equal(cfg.ca?.toString(), CA);
  assert.equal(cfg.cert?.toString(), CERT);
  assert.equal(cfg.key?.toString(), KEY);
  assert.equal(cfg.token, undefined);
  assert.equal(cfg.namespace, "eip-system");
  assert.equal(cfg.insecureSkipTlsVerify, undefined);

  const robot = parseKubeConfig(YAML_KUBECONFIG, { baseDir: "/nowhere", context: "robot@lab" });
  assert.equal(robot.server, "https://192.0.2.7:6443");
  assert.equal(robot.token?.(), "abc.def.ghi");
  assert.equal(robot.insecureSkipTlsVerify, true, "YAML 1.1 `yes`, as kubectl reads it");
  assert.equal(robot.tlsServerName, "api.example");
  assert.equal(robot.cert, undefined);
  assert.equal(robot.namespace, undefined);
});

test("a JSON kubeconfig naming files (as the kube-lab writes): relative to its folder", () => {
  const dir = tempDir();
  mkdirSync(join(dir, "pki"));
  writeFileSync(join(dir, "pki", "ca.crt"), CA);
  writeFileSync(join(dir, "pki", "admin.crt"), CERT);
  writeFileSync(join(dir, "admin.key"), KEY);
  const path = join(dir, "admin.kubeconfig");
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "lab",
          cluster: { server: "https://127.0.0.1:6443", "certificate-authority": "pki/ca.crt" },
        },
      ],
      users: [
        {
          name: "admin",
          user: { "client-certificate": "pki/admin.crt", "client-key": join(dir, "admin.key") },
        },
      ],
      contexts: [{ name: "admin", context: { cluster: "lab", user: "admin" } }],
      "current-context": "admin",
    }),
  );
  const cfg = readKubeConfigFile(path);
  assert.equal(cfg.server, "https://127.0.0.1:6443");
  assert.equal(cfg.ca?.toString(), CA);
  assert.equal(cfg.cert?.toString(), CERT);
  assert.equal(cfg.key?.toString(), KEY);
  assert.equal(cfg.source, path);
});

test("tokenFile: read at load, again once the refresh interval passed, the last kept on a failed read", () => {
  const dir = tempDir();
  const tokenPath = join(dir, "token");
  writeFileSync(tokenPath, "first\n");
  let now = 0;
  const token = fileTokenSource(tokenPath, { refreshMs: 1000, now: () => now });
  assert.equal(token(), "first");
  writeFileSync(tokenPath, "second\n");
  now = 999;
  assert.equal(token(), "first", "not read again before the interval");
  now = 1000;
  assert.equal(token(), "second");
  writeFileSync(tokenPath, "");
  now = 2000;
  assert.equal(token(), "second", "an empty file mid-rotation keeps the last token");
  assert.throws(() => fileTokenSource(join(dir, "missing")), /ENOENT/);

  const kubeconfig = join(dir, "config");
  writeFileSync(
    kubeconfig,
    `clusters: [{name: c, cluster: {server: "http://127.0.0.1:8080"}}]
users: [{name: u, user: {tokenFile: token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`,
  );
  writeFileSync(tokenPath, "third");
  const cfg = readKubeConfigFile(kubeconfig, { tokenRefreshMs: 0 });
  assert.equal(cfg.token?.(), "third");
  writeFileSync(tokenPath, "fourth");
  assert.equal(cfg.token?.(), "fourth", "refresh 0 reads at every request");
});

test("what it refuses, saying what is wrong", () => {
  const base = (
    user: string,
    extra = "",
  ) => `clusters: [{name: c, cluster: {server: "https://h:6443"${extra}}}]
users: [{name: u, user: ${user}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;
  const parse = (text: string, context?: string) =>
    parseKubeConfig(text, { baseDir: "/nowhere", ...(context ? { context } : {}) });
  assert.throws(() => parse(base("{token: t}"), "other"), /no context named "other"/);
  assert.throws(() => parse(base("{exec: {command: aws}}")), /exec.apiVersion undefined is not/);
  assert.throws(() => parse(base("{auth-provider: {name: gcp}}")), /auth-provider/);
  assert.throws(() => parse(base("{username: a, password: b}")), /username/);
  assert.throws(() => parse(base(`{client-certificate-data: ${b64(CERT)}}`)), /needs its key/);
  assert.throws(
    () => parse(base("{}", ", proxy-url: socks5://proxy:1080")),
    /proxy-url socks5:\/\/ proxies are not supported \(only http:\/\/ proxies\)/,
  );
  assert.throws(
    () => parse(base("{}", ", proxy-url: 'http://['")),
    /proxy-url http:\/\/\[ is not a URL/,
  );
  assert.equal(parse(base("{}", ", proxy-url: http://proxy:3128")).proxyUrl, "http://proxy:3128");
  assert.throws(() => parse(base("{}", ", insecure-skip-tls-verify: maybe")), /not a boolean/);
  assert.throws(() => parse("- a list\n"), /not a kubeconfig/);
  assert.throws(() => parse("clusters: []\n"), /no current-context/);
  assert.throws(
    () => parse(base("{}").replace("https://h:6443", "h:6443")),
    /not an http\(s\) URL/,
  );
});

/** A service-account folder as the kubelet mounts it. */
function serviceAccountDir(token: string): string {
  const dir = tempDir();
  writeFileSync(join(dir, "token"), token);
  writeFileSync(join(dir, "ca.crt"), CA);
  writeFileSync(join(dir, "namespace"), "eip-system");
  return dir;
}

test("loadKubeConfig's order: explicit path, first of $KUBECONFIG, in-cluster, ~/.kube/config", () => {
  const dir = tempDir();
  const config = (server: string) =>
    JSON.stringify({
      clusters: [{ name: "c", cluster: { server } }],
      users: [{ name: "u", user: { token: "t" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    });
  writeFileSync(join(dir, "explicit"), config("https://explicit:6443"));
  writeFileSync(join(dir, "first"), config("https://first:6443"));
  writeFileSync(join(dir, "second"), config("https://second:6443"));
  mkdirSync(join(dir, "home", ".kube"), { recursive: true });
  writeFileSync(join(dir, "home", ".kube", "config"), config("https://home:6443"));
  const sa = serviceAccountDir("sa-token");
  const inCluster = { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" };
  const kubeconfigEnv = { KUBECONFIG: `:${join(dir, "first")}:${join(dir, "second")}` };
  const load = (env: NodeJS.ProcessEnv, kubeconfig?: string) =>
    loadKubeConfig({
      env,
      serviceAccountDir: sa,
      homeDir: join(dir, "home"),
      ...(kubeconfig ? { kubeconfig } : {}),
    });

  assert.equal(
    load({ ...kubeconfigEnv, ...inCluster }, join(dir, "explicit")).server,
    "https://explicit:6443",
  );
  assert.equal(load({ ...kubeconfigEnv, ...inCluster }).server, "https://first:6443");
  const cluster = load(inCluster);
  assert.equal(cluster.server, "https://10.96.0.1:443");
  assert.equal(cluster.source, "in-cluster");
  assert.equal(cluster.token?.(), "sa-token");
  assert.equal(cluster.ca?.toString(), CA);
  assert.equal(cluster.namespace, "eip-system");
  assert.equal(load({}).server, "https://home:6443");
  assert.equal(
    load({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }).server,
    "https://[fd00::1]:443",
  );
  assert.throws(() => load({}, join(dir, "missing")), /kubeconfig .*missing: ENOENT/);
});

test("in-cluster: the token is read again (it rotates); the namespace of the ServiceAccount", () => {
  const sa = serviceAccountDir("one");
  const cfg = loadKubeConfig({
    env: { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" },
    serviceAccountDir: sa,
    tokenRefreshMs: 0,
  });
  assert.equal(cfg.token?.(), "one");
  writeFileSync(join(sa, "token"), "two");
  assert.equal(cfg.token?.(), "two");
  assert.equal(namespaceFromServiceAccount(sa), "eip-system");
  assert.equal(namespaceFromServiceAccount(tempDir()), undefined);
});

test("$KUBECONFIG of two files: merged as kubectl does (first wins; paths per file)", () => {
  const one = tempDir();
  const two = tempDir();
  writeFileSync(join(one, "ca.crt"), "CA ONE");
  writeFileSync(join(two, "ca.crt"), "CA TWO");
  writeFileSync(join(two, "token"), "token-two");
  // The first file: no current-context, its own "shared" cluster, a context into the second's user.
  writeFileSync(
    join(one, "config"),
    `clusters:
- name: shared
  cluster: {server: "https://one:6443", certificate-authority: ca.crt}
contexts:
- name: mixed
  context: {cluster: shared, user: two-user, namespace: from-one}
`,
  );
  writeFileSync(
    join(two, "config"),
    `current-context: mixed
clusters:
- name: shared
  cluster: {server: "https://two:6443", certificate-authority: ca.crt}
- name: only-two
  cluster: {server: "https://only-two:6443", certificate-authority: ca.crt}
users:
- name: two-user
  user: {tokenFile: token}
contexts:
- name: mixed
  context: {cluster: only-two, user: two-user}
- name: second
  context: {cluster: only-two, user: two-user}
`,
  );
  const env = {
    KUBECONFIG: [join(one, "config"), join(one, "absent"), join(two, "config")].join(":"),
  };
  const cfg = loadKubeConfig({ env });
  assert.equal(
    cfg.server,
    "https://one:6443",
    "current-context from the second, context and cluster from the first",
  );
  assert.equal(cfg.ca?.toString(), "CA ONE", "ca.crt next to the file that names it");
  assert.equal(cfg.namespace, "from-one");
  assert.equal(cfg.token?.(), "token-two", "the second file's tokenFile, next to it");
  assert.equal(cfg.source, `${join(one, "config")}:${join(two, "config")}`);
  const second = loadKubeConfig({ env, context: "second" });
  assert.equal(second.server, "https://only-two:6443");
  assert.equal(second.ca?.toString(), "CA TWO");
  assert.throws(
    () => loadKubeConfig({ env: { KUBECONFIG: join(one, "absent") } }),
    /none of .*absent exists/,
  );
});
