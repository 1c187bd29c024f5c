import assert from "node:assert/strict";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CommandError, CommandTimeout, ExecRunner } from "./runner.js";

/** Whether a process is gone (or only a zombie nobody reaped yet). */
async function gone(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

async function until(check: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

// A test timeout of its own: without a time limit the command never returns.
test(
  "a command past its limit is killed with its children and fails with CommandTimeout",
  { timeout: 30_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "keip-runner-"));
    let childPid = 0;
    try {
      const pidFile = join(dir, "child.pid");
      // A program that starts a child holding its stdout, then never exits: a wrapper script.
      const script = `
      const { spawn } = require("node:child_process");
      const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "inherit" });
      require("node:fs").writeFileSync(${JSON.stringify(pidFile)}, String(child.pid));
      setInterval(() => {}, 1000);
    `;
      const runner = new ExecRunner({ timeoutMs: 60_000 });
      const err = await runner.run(process.execPath, ["-e", script], { timeoutMs: 3000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof CommandTimeout, String(err));
      assert.ok(err instanceof CommandError);
      assert.equal(err.timeoutMs, 3000);
      assert.match(err.message, /timed out after 3000 ms, killed/);
      childPid = Number(await readFile(pidFile, "utf8"));
      assert.ok(childPid > 0);
      assert.ok(await until(() => gone(childPid)), "the command's child was killed too");
    } finally {
      // Should the test fail, it leaves no process behind.
      if (childPid > 0 && !(await gone(childPid))) process.kill(childPid, "SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test("the runner's own limit applies when a call names none", { timeout: 30_000 }, async () => {
  const runner = new ExecRunner({ timeoutMs: 500 });
  await assert.rejects(runner.run(process.execPath, ["-e", "setInterval(() => {}, 1000)"]), {
    name: "CommandTimeout",
  });
  assert.deepEqual(
    await runner.run(process.execPath, ["-e", "process.stdout.write('ok')"], { timeoutMs: 20_000 }),
    {
      stdout: "ok",
      stderr: "",
    },
  );
});
