// The speaker's bring-up against a fake gobgpd API (a given endpoint, so no process is
// started): a fresh speaker gets every EIP before any peer, with the restarting flag; a
// configured one keeps its peers and paths.
import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import type { GlobalConfig, ListedPeer, PeerConfig } from "./gobgp-api.js";
import { GobgpSpeaker, type SpeakerApi } from "./speaker.js";

const PEER: PeerConfig = {
  address: "172.16.0.1",
  asn: 65000,
  port: 179,
  password: "",
  holdTimeSec: 90,
  connectRetrySec: 5,
  gracefulRestartSec: 120,
};

class FakeApi implements SpeakerApi {
  global = { asn: 0, routerId: "" };
  readonly peers = new Map<string, ListedPeer>();
  readonly calls: string[] = [];
  async getGlobal() {
    return this.global;
  }
  async startBgp(g: GlobalConfig) {
    this.calls.push(`start ${g.asn}`);
    this.global = { asn: g.asn, routerId: g.routerId };
  }
  async addPeer(p: PeerConfig & { restarting?: boolean }) {
    this.calls.push(`addPeer ${p.address} restarting=${String(p.restarting)}`);
    this.peers.set(p.address, {
      address: p.address,
      asn: p.asn,
      state: "ACTIVE",
      adminDown: false,
      advertised: 0,
      uptimeSec: 0,
      settings: {
        port: p.port,
        password: p.password,
        holdTimeSec: p.holdTimeSec,
        connectRetrySec: p.connectRetrySec,
        gracefulRestartSec: p.gracefulRestartSec,
      },
    });
  }
  async deletePeer(address: string) {
    this.calls.push(`deletePeer ${address}`);
    this.peers.delete(address);
  }
  async listPeers() {
    return [...this.peers.values()];
  }
  watchPeers() {
    return () => {};
  }
}

function speaker(api: FakeApi, announce: () => Promise<void>) {
  return new GobgpSpeaker(api, {
    global: { asn: 65001, routerId: "172.16.0.11", listenPort: -1 },
    peers: [PEER],
    endpoint: "127.0.0.1:50051",
    binary: "gobgpd",
    stateDir: "/nonexistent",
    logger: pino({ level: "silent" }),
    announce,
    probeIntervalMs: 60_000,
  });
}

test("a fresh speaker is started, given every EIP, then its peers (restarting)", async () => {
  const api = new FakeApi();
  const s = speaker(api, async () => {
    api.calls.push("announce");
  });
  await s.start();
  await s.stop();
  assert.deepEqual(api.calls, ["start 65001", "announce", "addPeer 172.16.0.1 restarting=true"]);
});

test("a running, configured speaker is adopted as it is: no restart, no re-announce", async () => {
  const api = new FakeApi();
  api.global = { asn: 65001, routerId: "172.16.0.11" };
  await api.addPeer(PEER);
  api.calls.length = 0;
  const s = speaker(api, async () => {
    api.calls.push("announce");
  });
  await s.start();
  await s.stop();
  assert.deepEqual(api.calls, []);
});

test("a peer whose AS changed is replaced; a sidecar's other peers are left alone", async () => {
  const api = new FakeApi();
  api.global = { asn: 65001, routerId: "172.16.0.11" };
  await api.addPeer({ ...PEER, asn: 64999 });
  await api.addPeer({ ...PEER, address: "172.16.0.2" });
  api.calls.length = 0;
  const s = speaker(api, async () => {});
  await s.start();
  await s.stop();
  assert.deepEqual(api.calls, ["deletePeer 172.16.0.1", "addPeer 172.16.0.1 restarting=false"]);
  assert.ok(api.peers.has("172.16.0.2"));
});

test("a peer whose settings changed is configured again", async () => {
  const api = new FakeApi();
  api.global = { asn: 65001, routerId: "172.16.0.11" };
  await api.addPeer({ ...PEER, holdTimeSec: 30, password: "old" });
  api.calls.length = 0;
  const s = speaker(api, async () => {});
  await s.start();
  await s.stop();
  assert.deepEqual(api.calls, ["deletePeer 172.16.0.1", "addPeer 172.16.0.1 restarting=false"]);
  assert.deepEqual(api.peers.get(PEER.address)?.settings.holdTimeSec, 90);
});

test("a sidecar running another AS is not taken over", async () => {
  const api = new FakeApi();
  api.global = { asn: 64512, routerId: "10.0.0.1" };
  const s = speaker(api, async () => {});
  await s.start();
  await s.stop();
  assert.deepEqual(api.calls, [], "nothing was changed on it");
});
