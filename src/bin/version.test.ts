// Every binary's --version: the package's version and the commit the build was made from
// (what scripts/build-info.sh records after tsc, as setup.sh, the Makefile and the image
// build run it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { buildInfo, versionLine } from "../common/version.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const BIN = join(ROOT, "dist/src/bin");
const BINARIES = {
  "eip_agent.js": "eip_agent",
  "eip_agent-container.js": "eip_agent",
  "eipctl.js": "eipctl",
  "eip-operator.js": "eip-operator",
  "kube-eip-certs.js": "kube-eip-certs",
  "lab.js": "kube-eip-lab",
  "kube-lab.js": "kube-eip-kube-lab",
};
const PACKAGE_VERSION = (
  JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }
).version;

/** The environment without a KUBE_EIP_COMMIT of the caller's. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (!("KUBE_EIP_COMMIT" in extra)) delete e["KUBE_EIP_COMMIT"];
  return e;
}

async function buildInfoScript(extra: Record<string, string> = {}) {
  return run(join(ROOT, "scripts/build-info.sh"), [], { env: env(extra), timeout: 30_000 });
}

async function versionOf(file: string): Promise<string> {
  const { stdout } = await run(process.execPath, [join(BIN, file), "--version"], {
    env: env(),
    timeout: 30_000,
  });
  return stdout;
}

async function head(): Promise<string | undefined> {
  try {
    return (await run("git", ["-C", ROOT, "rev-parse", "HEAD"], { timeout: 10_000 })).stdout.trim();
  } catch {
    return undefined;
  }
}

test("every binary's --version prints the package version and the commit of the build", async () => {
  await buildInfoScript();
  const commit = await head();
  for (const [file, name] of Object.entries(BINARIES)) {
    const out = await versionOf(file);
    const m = /^(\S+) (\S+) \(commit (\S+)\)\n$/.exec(out);
    assert.ok(m, `${file}: ${out}`);
    assert.equal(m[1], name, file);
    assert.equal(m[2], PACKAGE_VERSION, file);
    if (commit === undefined) assert.equal(m[3], "unknown", file);
    else assert.match(m[3] ?? "", new RegExp(`^${commit}(-dirty)?$`), file);
  }
});

test("the build records KUBE_EIP_COMMIT when given (the image build), and refuses garbage", async () => {
  try {
    await buildInfoScript({ KUBE_EIP_COMMIT: "0123abc" });
    assert.equal(await versionOf("eipctl.js"), `eipctl ${PACKAGE_VERSION} (commit 0123abc)\n`);
    await assert.rejects(buildInfoScript({ KUBE_EIP_COMMIT: 'x","version":"9' }), /not a commit/);
    assert.equal(await versionOf("eipctl.js"), `eipctl ${PACKAGE_VERSION} (commit 0123abc)\n`);
  } finally {
    await buildInfoScript();
  }
});

test("without package.json or build-info.json the version and the commit are unknown", () => {
  const dir = mkdtempSync(join(tmpdir(), "keip-version-"));
  try {
    const pkg = join(dir, "package.json");
    const info = join(dir, "build-info.json");
    assert.deepEqual(buildInfo(pathToFileURL(pkg), pathToFileURL(info)), {
      version: "unknown",
      commit: "unknown",
    });
    writeFileSync(pkg, JSON.stringify({ version: "1.2.3" }));
    writeFileSync(info, "not json");
    const got = buildInfo(pathToFileURL(pkg), pathToFileURL(info));
    assert.equal(versionLine("eipctl", got), "eipctl 1.2.3 (commit unknown)");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
