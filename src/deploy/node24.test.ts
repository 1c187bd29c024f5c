// scripts/node24.sh, which setup.sh, test.sh and demo.sh call: these tests themselves run on
// the Node.js 24 it provides; a Node 24 on PATH is used as it is; and a download that does
// not match the pinned integrity is refused, leaving nothing installed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("../../../scripts/node24.sh", import.meta.url));

function run(env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile("bash", [SCRIPT], { env, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test("the tests run on Node.js 24", () => {
  assert.equal(process.versions.node.split(".")[0], "24", process.version);
});

test("a Node 24 (with npm) already on PATH is used as it is", async () => {
  const bin = dirname(process.execPath);
  const r = await run({ ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}` });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${bin}\n`);
});

test("a tarball that does not match its pinned integrity is refused; nothing is installed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "keip-node24-"));
  const tools = join(dir, "bin");
  const cache = join(dir, "cache");
  // The tools the script needs, and no node: a fresh machine.
  mkdirSync(tools);
  for (const t of ["bash", "curl", "base64", "od", "tr", "sha512sum", "cut", "tar", "gzip"]) {
    for (const d of ["/usr/bin", "/bin"]) {
      if (existsSync(join(d, t))) {
        symlinkSync(join(d, t), join(tools, t));
        break;
      }
    }
  }
  for (const t of ["mkdir", "rm", "mv", "ln", "flock", "uname", "dirname"]) {
    symlinkSync(`/usr/bin/${t}`, join(tools, t));
  }
  const asked: string[] = [];
  const server = createServer((req, res) => {
    asked.push(req.url ?? "");
    res.writeHead(200).end("not the Node.js release");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const r = await run({
      PATH: tools,
      HOME: dir,
      KUBE_EIP_CACHE: cache,
      KUBE_EIP_NPM_REGISTRY: `http://127.0.0.1:${port}`,
    });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      /node-linux-(x64|arm64)-24\.\d+\.\d+\.tgz does not match its pinned integrity/,
    );
    assert.match(asked[0] ?? "", /^\/node-linux-(x64|arm64)\/-\/node-linux-(x64|arm64)-24\./);
    assert.deepEqual(readdirSync(cache), [".node.lock"], "no Node, not even a partial one");
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
