import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseIpv4 } from "../../common/ipv4.js";
import { admits, contains, matches, parseEntry, parsePool, poolSet } from "./parse.js";
import type { EipPool, EipPoolSpec } from "./types.js";

const ip = (s: string) => parseIpv4(s) as number;

function pool(name: string, spec: EipPoolSpec, created = "2026-01-01T00:00:00Z"): EipPool {
  return { metadata: { name, creationTimestamp: created }, spec };
}

describe("parseEntry", () => {
  test("a CIDR gives its hosts; network and broadcast only when asked", () => {
    assert.deepEqual(parseEntry("10.0.0.0/30", true), {
      start: ip("10.0.0.1"),
      end: ip("10.0.0.2"),
    });
    assert.deepEqual(parseEntry("10.0.0.0/30", false), {
      start: ip("10.0.0.0"),
      end: ip("10.0.0.3"),
    });
    assert.deepEqual(parseEntry("10.0.0.4/31", true), {
      start: ip("10.0.0.4"),
      end: ip("10.0.0.5"),
    });
    assert.deepEqual(parseEntry("10.0.0.9", true), { start: ip("10.0.0.9"), end: ip("10.0.0.9") });
  });
  test("a range includes both ends", () => {
    assert.deepEqual(parseEntry("10.0.0.10-10.0.0.12", true), {
      start: ip("10.0.0.10"),
      end: ip("10.0.0.12"),
    });
  });
  test("bad entries say why", () => {
    assert.match(parseEntry("10.0.0.12-10.0.0.10", true) as string, /backwards/);
    assert.match(parseEntry("10.0.0.1/24", true) as string, /host bits/);
    assert.match(parseEntry("10.0.0-10.0.0.2", true) as string, /not a range/);
    assert.match(parseEntry("2001:db8::/64", true) as string, /not an IPv4/);
  });
});

describe("parsePool", () => {
  test("exclusions are taken out; the size counts what may be handed out", () => {
    const r = parsePool(
      pool("p", {
        addresses: ["10.0.0.0/29", "10.0.1.10-10.0.1.12"],
        exclude: ["10.0.0.2-10.0.0.3", "10.0.1.11"],
      }),
    );
    assert.ok(r.ok);
    // /29 hosts .1-.6 minus .2,.3 = 4; range 3 minus 1 = 2.
    assert.equal(r.pool.size, 6);
    assert.ok(contains(r.pool, ip("10.0.0.1")));
    assert.ok(!contains(r.pool, ip("10.0.0.0")), "network address");
    assert.ok(!contains(r.pool, ip("10.0.0.7")), "broadcast address");
    assert.ok(!contains(r.pool, ip("10.0.0.2")), "excluded");
    assert.ok(!contains(r.pool, ip("10.0.1.11")), "excluded");
    assert.ok(contains(r.pool, ip("10.0.1.12")));
  });
  test("overlapping entries, backwards ranges and pools with nothing left are invalid", () => {
    const bad = (spec: EipPoolSpec) => {
      const r = parsePool(pool("p", spec));
      assert.ok(!r.ok);
      return r.error;
    };
    assert.match(bad({ addresses: ["10.0.0.0/24", "10.0.0.5-10.0.0.9"] }), /overlap/);
    assert.match(bad({ addresses: ["10.0.0.9-10.0.0.5"] }), /backwards/);
    assert.match(bad({ addresses: ["10.0.0.0/30"], exclude: ["10.0.0.0/30"] }), /no address/);
    assert.match(bad({ addresses: ["10.0.0.0/24"], exclude: ["x"] }), /^exclude:/);
  });
});

describe("poolSet", () => {
  test("a pool overlapping an older one is invalid; the older keeps its addresses", () => {
    const set = poolSet([
      pool("young", { addresses: ["10.0.0.128/25"] }, "2026-02-01T00:00:00Z"),
      pool("old", { addresses: ["10.0.0.0/24"] }, "2026-01-01T00:00:00Z"),
      pool("other", { addresses: ["10.0.1.0/24"] }, "2026-03-01T00:00:00Z"),
    ]);
    assert.deepEqual(
      set.valid.map((p) => p.name),
      ["old", "other"],
    );
    assert.match(set.invalid.get("young") ?? "", /overlaps the older EipPool old/);
    assert.ok(set.fenced);
  });
  test("the default is the oldest valid pool marked default; no pools, no fence", () => {
    const set = poolSet([
      pool("b", { addresses: ["10.0.1.0/24"], default: true }, "2026-02-01T00:00:00Z"),
      pool("a", { addresses: ["10.0.0.0/24"], default: true }, "2026-01-01T00:00:00Z"),
    ]);
    assert.equal(set.defaultPool?.name, "a");
    assert.equal(poolSet([]).fenced, false);
    const onlyBad = poolSet([pool("x", { addresses: ["10.0.0.9-10.0.0.1"] })]);
    assert.ok(onlyBad.fenced, "an invalid pool still fences: it admits no one");
    assert.equal(onlyBad.valid.length, 0);
  });
});

describe("namespace admission", () => {
  const parsed = (spec: Partial<EipPoolSpec>) => {
    const r = parsePool(pool("p", { addresses: ["10.0.0.0/24"], ...spec }));
    assert.ok(r.ok);
    return r.pool;
  };
  test("with neither names nor a selector every namespace is admitted", () => {
    assert.ok(admits(parsed({}), "anyone", undefined));
  });
  test("names and a selector each admit; unknown labels admit only by name", () => {
    const p = parsed({ namespaces: ["team-b"], namespaceSelector: { matchLabels: { t: "a" } } });
    assert.ok(admits(p, "team-b", undefined));
    assert.ok(admits(p, "team-a", { t: "a" }));
    assert.ok(!admits(p, "team-c", { t: "c" }));
    assert.ok(!admits(p, "team-a", undefined));
  });
  test("match expressions", () => {
    const l = { tier: "prod", team: "x" };
    const m = (e: object) => matches({ matchExpressions: [e as never] }, l);
    assert.ok(m({ key: "tier", operator: "In", values: ["prod", "dev"] }));
    assert.ok(!m({ key: "tier", operator: "In", values: ["dev"] }));
    assert.ok(m({ key: "tier", operator: "NotIn", values: ["dev"] }));
    assert.ok(m({ key: "absent", operator: "NotIn", values: ["dev"] }));
    assert.ok(m({ key: "team", operator: "Exists" }));
    assert.ok(!m({ key: "team", operator: "DoesNotExist" }));
    assert.ok(m({ key: "absent", operator: "DoesNotExist" }));
    assert.ok(!matches({ matchLabels: { tier: "dev" } }, l));
  });
});
