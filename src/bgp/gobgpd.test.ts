// The speaker against the real gobgpd (Debian's 3.10), no root needed: its API is a Unix
// socket in a private directory and no TCP port; a PID file proves which process it names
// before anything is signalled; the peer options reach gobgpd, as its API reads them back.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { eventually } from "../../e2e/harness.js";
import { GobgpClient, type PeerConfig } from "./gobgp-api.js";
import { type ProcessIdentity, identify, isRunning } from "./own-process.js";
import { GobgpSpeaker, ownApiSocket, stopLeftoverSpeaker } from "./speaker.js";

const GOBGPD = (() => {
  try {
    return execFileSync("which", ["gobgpd"], { encoding: "utf8", timeout: 5000 }).trim();
  } catch {
    return undefined;
  }
})();

const PEER: PeerConfig = {
  address: "127.0.0.2",
  asn: 65000,
  port: 1179,
  password: "md5-s3cret",
  holdTimeSec: 30,
  connectRetrySec: 5,
  gracefulRestartSec: 45,
};

describe("the speaker with a real gobgpd", { skip: GOBGPD ? false : "no gobgpd" }, () => {
  let root: string;
  let n = 0;
  const started: { stateDir: string; client: GobgpClient; speaker: GobgpSpeaker }[] = [];
  /** Stand-ins for processes that took a dead gobgpd's PID, named gobgpd as it was. */
  const impostors: ChildProcess[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "keip-gobgpd-"));
  });
  after(async () => {
    for (const { stateDir, client, speaker } of started) {
      await speaker.stop();
      client.close();
      await stopLeftoverSpeaker(stateDir, pino({ level: "silent" }));
    }
    for (const p of impostors) p.kill("SIGKILL");
    await rm(root, { recursive: true, force: true });
  });

  const newStateDir = async () => {
    const dir = join(root, `s${n++}`);
    await mkdir(dir, { recursive: true });
    return dir;
  };
  const startSpeaker = async (stateDir: string, peers: readonly PeerConfig[] = [PEER]) => {
    const opts = {
      global: { asn: 65001, routerId: "10.255.0.1", listenPort: -1 },
      peers,
      binary: GOBGPD ?? "gobgpd",
      stateDir,
      logger: pino({ level: "silent" }),
      announce: async () => {},
      probeIntervalMs: 60_000,
    };
    const client = new GobgpClient(GobgpSpeaker.target(opts));
    const speaker = new GobgpSpeaker(client, opts);
    started.push({ stateDir, client, speaker });
    await speaker.start();
    return { client, speaker };
  };
  /** A `sleep` whose process name is gobgpd (exec'd through a link of that name). */
  const impostor = async () => {
    const link = join(root, `i${n++}`, "gobgpd");
    await mkdir(join(link, ".."), { recursive: true });
    await symlink("/bin/sleep", link);
    const p = spawn(link, ["600"], { stdio: "ignore" });
    impostors.push(p);
    await new Promise((resolve) => p.once("spawn", resolve));
    const comm = await readFile(`/proc/${p.pid}/comm`, "utf8");
    assert.equal(comm.trim(), "gobgpd", "it looks like gobgpd by name");
    return p.pid ?? 0;
  };

  test("the API is a Unix socket in a directory only the agent's user may enter; no TCP port", async () => {
    const stateDir = await newStateDir();
    const { client, speaker } = await startSpeaker(stateDir);
    const pid = speaker.pid;
    assert.ok(pid, "a gobgpd runs");
    assert.deepEqual(await client.getGlobal(), { asn: 65001, routerId: "10.255.0.1" });
    const dir = await stat(join(ownApiSocket(stateDir), ".."));
    assert.equal(dir.mode & 0o777, 0o700);
    assert.equal(dir.uid, process.getuid?.());
    assert.ok((await stat(ownApiSocket(stateDir))).isSocket());
    const ss = (args: string[]) => execFileSync("ss", args, { encoding: "utf8", timeout: 5000 });
    const ofPid = new RegExp(`pid=${pid},`);
    assert.match(ss(["-Hxlnp"]), ofPid, "ss sees gobgpd's Unix socket (so it would see a port)");
    assert.doesNotMatch(ss(["-Htulnp"]), ofPid, "gobgpd listens on no TCP or UDP port");
  });

  test("password, hold time and graceful restart time are what gobgpd holds", async () => {
    const { client } = await startSpeaker(await newStateDir());
    const [peer, ...more] = await client.listPeers();
    assert.equal(more.length, 0);
    assert.equal(peer?.address, PEER.address);
    assert.deepEqual(peer.settings, {
      port: PEER.port,
      password: PEER.password,
      holdTimeSec: PEER.holdTimeSec,
      connectRetrySec: PEER.connectRetrySec,
      gracefulRestartSec: PEER.gracefulRestartSec,
    });
  });

  test("changed options reach a gobgpd a restarted agent adopts", async () => {
    const stateDir = await newStateDir();
    const first = await startSpeaker(stateDir);
    const pid = first.speaker.pid;
    await first.speaker.stop();
    const changed = { ...PEER, password: "", holdTimeSec: 9, gracefulRestartSec: 0 };
    const second = await startSpeaker(stateDir, [changed]);
    assert.equal(second.speaker.pid, pid, "the same gobgpd, adopted");
    const [peer] = await second.client.listPeers();
    assert.deepEqual(peer?.settings, {
      port: PEER.port,
      password: "",
      holdTimeSec: 9,
      connectRetrySec: PEER.connectRetrySec,
      gracefulRestartSec: 0,
    });
  });

  test("a bare PID (an older agent's file) naming a process called gobgpd: left alive", async () => {
    const stateDir = await newStateDir();
    const other = await impostor();
    await writeFile(join(stateDir, "gobgpd.pid"), `${other}\n`);
    const { speaker, client } = await startSpeaker(stateDir);
    assert.ok(speaker.pid && speaker.pid !== other, "a gobgpd of its own started");
    assert.equal((await client.getGlobal()).asn, 65001);
    await speaker.stop();
    await stopLeftoverSpeaker(stateDir, pino({ level: "silent" }));
    assert.equal(await isRunning((await identify(other))!), true, "the other process still runs");
  });

  // The record of a gobgpd of ours whose PID the impostor took since: one part differs.
  const records: [string, (now: ProcessIdentity, stateDir: string) => ProcessIdentity][] = [
    ["its start time", (now) => ({ ...now, startTime: String(Number(now.startTime) - 100) })],
    [
      "its executable and command line",
      (now, stateDir) => ({
        ...now,
        exe: GOBGPD ?? "",
        cmdline: [GOBGPD ?? "", `--api-hosts=unix://${ownApiSocket(stateDir)}`],
      }),
    ],
  ];
  for (const [differs, recordOf] of records) {
    test(`a PID file naming a process that differs in ${differs}: left alive, at start and with BGP off`, async () => {
      const stateDir = await newStateDir();
      const now = await identify(await impostor());
      assert.ok(now);
      const record = JSON.stringify(recordOf(now, stateDir));
      await writeFile(join(stateDir, "gobgpd.pid"), record);
      await stopLeftoverSpeaker(stateDir, pino({ level: "silent" }));
      assert.ok(await isRunning(now), "--bgp-type none left it alone");
      await writeFile(join(stateDir, "gobgpd.pid"), record);
      const { speaker } = await startSpeaker(stateDir);
      assert.ok(speaker.pid && speaker.pid !== now.pid, "a gobgpd of its own started");
      assert.ok(await isRunning(now), "the start left it alone");
    });
  }

  test("a sidecar's socket: refused while other users may enter its directory, used once 0700", async () => {
    const dir = join(root, `sidecar${n++}`);
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    const socket = join(dir, "api.sock");
    const sidecar = spawn(GOBGPD ?? "gobgpd", [`--api-hosts=unix://${socket}`, "--pprof-disable"], {
      stdio: "ignore",
    });
    impostors.push(sidecar);
    const probe = new GobgpClient(`unix:${socket}`);
    const errors: string[] = [];
    const logger = pino({ level: "error" }, { write: (line: string) => errors.push(line) });
    const opts = {
      global: { asn: 65001, routerId: "10.255.0.1", listenPort: -1 },
      peers: [PEER],
      endpoint: `unix:${socket}`,
      binary: "/nonexistent/gobgpd",
      stateDir: await newStateDir(),
      logger,
      announce: async () => {},
      probeIntervalMs: 60_000,
    };
    const client = new GobgpClient(GobgpSpeaker.target(opts));
    const speaker = new GobgpSpeaker(client, opts);
    try {
      const answers = () =>
        probe.getGlobal(500).then(
          () => true,
          () => false,
        );
      assert.ok(await eventually(answers, 10_000), "the sidecar answers");
      await speaker.start();
      assert.match(errors.join(""), /open to other users \(mode 755\)/);
      assert.equal((await probe.getGlobal()).asn, 0, "the agent configured nothing there");
      await chmod(dir, 0o700);
      assert.ok(
        await eventually(async () => (await probe.getGlobal()).asn === 65001, 10_000),
        "configured once the directory is private",
      );
    } finally {
      await speaker.stop();
      client.close();
      probe.close();
    }
  });

  test("--bgp-type none stops the gobgpd the PID file proves is ours", async () => {
    const stateDir = await newStateDir();
    const { speaker } = await startSpeaker(stateDir);
    await speaker.stop();
    const ours = await identify(speaker.pid ?? 0);
    assert.ok(ours);
    await stopLeftoverSpeaker(stateDir, pino({ level: "silent" }));
    assert.equal(await isRunning(ours), false, "stopped");
  });
});
