import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type BgpView, announcedOf, attribute, programmedOf } from "./binding-state.js";

const A = { eip: "192.168.18.100", vmi: "10.0.0.1" };
const B = { eip: "192.168.18.101", vmi: "10.0.0.11" };
const AT = "2026-01-01T00:00:00.000Z";
const written = { pending: false, lastError: undefined };

function view(peers: [string, string][], sent: Record<string, string[]>): BgpView {
  return {
    at: AT,
    peers: peers.map(([address, state]) => ({ address, state })),
    sent: new Map(Object.entries(sent).map(([p, eips]) => [p, new Set(eips)])),
  };
}

describe("attribute", () => {
  it("gives an item to the bindings whose EIP or VMI it names, exactly", () => {
    const f = attribute(
      [
        { what: "ip rule from 10.0.0.1 lookup 1001" },
        { what: "ipset kube-eip-eip member 192.168.18.101" },
        { what: "iptables -t nat -A PREROUTING -m set --match-set kube-eip-eip dst" },
      ],
      [A, B],
      AT,
    );
    assert.deepEqual(
      f.missing.get(A.eip)?.map((m) => m.what),
      ["ip rule from 10.0.0.1 lookup 1001"],
    );
    assert.deepEqual(
      f.missing.get(B.eip)?.map((m) => m.what),
      ["ipset kube-eip-eip member 192.168.18.101"],
    );
    assert.equal(f.shared.length, 1);
  });
});

describe("programmedOf", () => {
  it("a pending binding is NotWritten with the apply's error", () => {
    const c = programmedOf(A, { pending: true, lastError: "iptables-restore: exit 4" }, undefined);
    assert.equal(c.status, "False");
    assert.equal(c.reason, "NotWritten");
    assert.match(c.message, /exit 4/);
  });

  it("a binding the last read-back did not cover is Unknown, even if its VMI changed", () => {
    const f = attribute([], [{ eip: A.eip, vmi: "10.0.0.9" }], AT);
    assert.equal(programmedOf(A, written, f).status, "Unknown");
    assert.equal(programmedOf(A, written, undefined).reason, "NotReadBack");
  });

  it("a shared item missing makes every binding False and says so", () => {
    const f = attribute([{ what: "nftables table ip kube_eip" }], [A, B], AT);
    f.repairError = "nft: exit 1";
    const c = programmedOf(B, written, f);
    assert.equal(c.reason, "Missing");
    assert.match(c.message, /nftables table ip kube_eip; repairing failed: nft: exit 1/);
  });
});

describe("announcedOf with BGP", () => {
  it("True only when an established peer has been sent the route", () => {
    const sent = view(
      [
        ["10.1.0.1", "ESTABLISHED"],
        ["10.1.0.2", "ACTIVE"],
      ],
      { "10.1.0.1": [A.eip] },
    );
    assert.equal(announcedOf(A, undefined, sent).reason, "Announced");
    assert.match(announcedOf(A, undefined, sent).message, /sent to 10\.1\.0\.1 \(1 of 2 peers\)/);
    assert.equal(announcedOf(B, undefined, sent).reason, "NotSent");
  });

  it("no established session, a speaker down, not asked yet", () => {
    const down = view([["10.1.0.1", "ACTIVE"]], {});
    assert.equal(announcedOf(A, undefined, down).reason, "NoEstablishedPeer");
    assert.match(announcedOf(A, undefined, down).message, /10\.1\.0\.1 ACTIVE/);
    const c = announcedOf(A, undefined, { at: AT, error: "connection refused" });
    assert.deepEqual([c.status, c.reason], ["False", "SpeakerUnavailable"]);
    assert.equal(announcedOf(A, undefined, undefined).status, "Unknown");
  });
});
