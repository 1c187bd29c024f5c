// The Makefile's command lines, as `make -n` prints them: the seed's IMG habits and the
// kubebuilder targets a seed user types. (e2e/deploy.privileged.test.ts runs deploy and
// deploy-agent against a real apiserver.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { access } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** `make -n` of the target with these variables (on the command line, or in env). */
async function dryRun(
  target: string,
  vars: Record<string, string> = {},
  env: Record<string, string> = {},
): Promise<string> {
  const clean: NodeJS.ProcessEnv = { ...process.env, ...env, COMMIT: "0123abc" };
  for (const v of ["IMG", "AGENT_IMG", "EIPCTL_IMG", "PLATFORMS"]) if (!(v in env)) delete clean[v];
  const args = Object.entries(vars).map(([k, v]) => `${k}=${v}`);
  const { stdout } = await run(
    "make",
    ["-n", "--no-print-directory", "-C", ROOT, target, ...args],
    {
      env: clean,
      timeout: 30_000,
    },
  );
  return stdout;
}

/** The image the kustomize overlay of a deploy target sets, for the image name. */
function deployedImage(out: string, name: string): string | undefined {
  const m = new RegExp(`'(config/[a-z]+)' '${name}' '([^']+)'`).exec(out);
  return m?.[2];
}

test("deploy-agent deploys IMG when given, as the seed did; AGENT_IMG wins; else the default", async () => {
  assert.equal(
    deployedImage(await dryRun("deploy-agent", { IMG: "reg/a:1" }), "eip-agent"),
    "reg/a:1",
  );
  assert.equal(
    deployedImage(await dryRun("deploy-agent", {}, { IMG: "reg/env:2" }), "eip-agent"),
    "reg/env:2",
  );
  assert.equal(
    deployedImage(
      await dryRun("deploy-agent", { IMG: "reg/op:1", AGENT_IMG: "reg/agent:3" }),
      "eip-agent",
    ),
    "reg/agent:3",
  );
  assert.equal(
    deployedImage(await dryRun("deploy-agent"), "eip-agent"),
    "kube-eip/eip-agent:0.1.0",
  );
  assert.equal(
    deployedImage(await dryRun("deploy", { IMG: "reg/op:1" }), "eip-operator"),
    "reg/op:1",
  );
});

test("the seed's docker-build-* with IMG: the agent's, eipctl's (docker-build-ctl) and the operator's", async () => {
  assert.match(
    await dryRun("docker-build-agent", { IMG: "reg/ag:1" }),
    /^docker build --build-arg KUBE_EIP_COMMIT=0123abc --target agent -t reg\/ag:1 \.$/m,
  );
  assert.match(
    await dryRun("docker-build-ctl", { IMG: "reg/ctl:1" }),
    /^docker build --build-arg KUBE_EIP_COMMIT=0123abc --target eipctl -t reg\/ctl:1 \.$/m,
  );
  assert.match(
    await dryRun("docker-build-operator", { IMG: "reg/op:1", CONTAINER_TOOL: "podman" }),
    /^podman build --build-arg KUBE_EIP_COMMIT=0123abc --target operator -t reg\/op:1 \.$/m,
  );
});

test("kubebuilder's install, uninstall and run", async () => {
  assert.match(await dryRun("install"), /^kubectl apply -k config\/crd$/m);
  assert.match(
    await dryRun("uninstall", { "ignore-not-found": "true" }),
    /^kubectl delete --ignore-not-found=true -k config\/crd$/m,
  );
  const out = await dryRun("run", { ARGS: "--leader-elect --workers 4" });
  assert.match(out, /^npx tsc -p tsconfig\.json$/m, "built first");
  assert.match(out, /^node dist\/src\/bin\/eip-operator\.js --leader-elect --workers 4$/m);
});

test("docker-buildx builds and pushes the three images for PLATFORMS", async () => {
  const out = await dryRun("docker-buildx", {
    IMG: "reg:5000/op:1",
    AGENT_IMG: "reg:5000/agent:1",
    PLATFORMS: "linux/amd64,linux/arm64,linux/s390x",
  });
  assert.match(out, /^docker buildx create --name kube-eip-builder$/m);
  assert.match(out, /trap 'docker buildx rm kube-eip-builder' EXIT/);
  assert.match(
    out,
    /for target in operator:reg:5000\/op:1 agent:reg:5000\/agent:1 eipctl:kube-eip\/eipctl:0\.1\.0; do/,
  );
  assert.match(
    out,
    /docker buildx build --push --platform=linux\/amd64,linux\/arm64,linux\/s390x --build-arg KUBE_EIP_COMMIT=0123abc/,
  );
});

test("image-test builds, then runs the images' test, which exists", async () => {
  const out = await dryRun("image-test");
  assert.match(out, /^npx tsc -p tsconfig\.json$/m, "built first");
  const m = /^node --test .* (dist\/e2e\/\S+\.test\.js)$/m.exec(out) ?? assert.fail(out);
  await access(fileURLToPath(new URL(`../../../${m[1]}`, import.meta.url)));
});
