import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { plan } from "../model/plan.js";
import { failedBatchLines } from "./iproute.js";
import {
  parseAddresses,
  parseArpRoutes,
  parseProxies,
  parseRoutes,
  parseRules,
  routeKey,
} from "./iproute-parse.js";
import { ROUTES, RULES, ADDRS, PROXIES, ARP_ROUTES, CONFIG } from "./iproute-fixtures.js";

describe("iproute parsers", () => {
  it("reads proxy entries and our main-table routes", () => {
    assert.deepEqual(parseProxies(PROXIES), [
      { address: "10.9.9.9", protocol: undefined },
      { address: "192.168.18.102", protocol: 225 },
      { address: "192.168.18.100", protocol: 225 },
      { address: "192.168.18.150", protocol: undefined },
    ]);
    assert.deepEqual(parseArpRoutes(ARP_ROUTES, 225), [
      {
        address: undefined,
        dev: undefined,
        del: "route del 192.168.18.64/26 table main proto 225",
      },
      {
        address: "192.168.18.100",
        dev: "cni0",
        del: "route del 192.168.18.100/32 table main proto 225",
      },
      {
        address: "192.168.18.101",
        dev: "eth0",
        del: "route del 192.168.18.101/32 table main proto 225",
      },
      {
        address: undefined,
        dev: undefined,
        del: "route del 192.168.18.102/32 table main metric 100 proto 225",
      },
      {
        address: "192.168.18.103",
        dev: undefined,
        del: "route del 192.168.18.103/32 table main proto 225",
      },
    ]);
  });

  it("reads routes with their identity, comparison key and delete line", () => {
    const routes = parseRoutes(ROUTES, 1001);
    assert.deepEqual(
      routes.map((r) => [r.key, r.del]),
      [
        ["via default 192.168.18.1 eth1", "route del default table 1001"],
        ["throw 10.1.2.3/32", "route del 10.1.2.3/32 table 1001"],
        ["link 10.5.0.0/16 eth1 tos 0x10 metric 0", "route del 10.5.0.0/16 table 1001 tos 0x10"],
        [
          "via 10.7.0.0/16 192.168.18.1 eth1 tos 0 metric 100",
          "route del 10.7.0.0/16 table 1001 metric 100",
        ],
        [
          `other ${JSON.stringify({ type: "unreachable", dst: "10.8.0.0/16", flags: [] })}`,
          "route del 10.8.0.0/16 table 1001",
        ],
        ["throw 10.96.0.0/12", "route del 10.96.0.0/12 table 1001"],
        ["throw 10.244.0.0/16", "route del 10.244.0.0/16 table 1001"],
        ["link 192.168.18.0/24 eth1", "route del 192.168.18.0/24 table 1001"],
      ],
    );
    assert.equal(routes[0]?.identity, "default tos 0 metric 0");
  });

  it("keys desired routes like kernel routes", () => {
    assert.deepEqual(plan(CONFIG, []).routes.map(routeKey), [
      "link 192.168.18.0/24 eth1",
      "via default 192.168.18.1 eth1",
      "throw 10.244.0.0/16",
      "throw 10.96.0.0/12",
    ]);
  });

  it("keeps only our rules (priority 1001, table 1001 or eip_route)", () => {
    const rules = parseRules(RULES, { table: 1001, priority: 1001 });
    assert.deepEqual(
      rules.map((r) => [r.key.startsWith("other ") ? "other" : r.key, r.exact, r.del]),
      [
        ["from 10.0.0.1/32", true, "rule del from 10.0.0.1/32 lookup 1001 priority 1001"],
        ["from 10.0.0.11/32", true, "rule del from 10.0.0.11/32 lookup 1001 priority 1001"],
        ["from 10.0.0.12/32", true, "rule del from 10.0.0.12/32 lookup 1001 priority 1001"],
        ["other", true, "rule del from 10.0.0.1/32 iif eth1 lookup 1001 priority 1001"],
      ],
    );
    // Without -N, ip shows the name from rt_tables.
    const named = RULES.replaceAll('"table":"1001"', '"table":"eip_route"');
    assert.equal(parseRules(named, { table: 1001, priority: 1001 }).length, 4);
    assert.equal(parseRules(named, { table: 1001, priority: 1001, tableName: "other" }).length, 0);
  });

  it("marks rules whose delete would be a wildcard as inexact", () => {
    const rules = parseRules(
      JSON.stringify([
        { priority: 1001, src: "all", table: "1001" },
        { priority: 1001, src: "10.0.0.5", ipproto: "tcp", table: "1001" },
        { priority: 1001, src: "10.0.0.0", srclen: 8, table: "1001" },
      ]),
      { table: 1001, priority: 1001 },
    );
    assert.deepEqual(
      rules.map((r) => [r.exact, r.del]),
      [
        [false, "rule del from all lookup 1001 priority 1001"],
        [false, "rule del from 10.0.0.5/32 lookup 1001 priority 1001"],
        [true, "rule del from 10.0.0.0/8 lookup 1001 priority 1001"],
      ],
    );
  });

  it("reads the device's IPv4 addresses", () => {
    assert.deepEqual(parseAddresses(ADDRS), [
      { address: "192.168.18.11", prefix: 24, secondary: false, label: "eth1" },
      { address: "192.168.18.100", prefix: 32, secondary: false, label: "eth1:eip" },
      { address: "192.168.18.102", prefix: 32, secondary: false, label: "eth1:eip" },
      { address: "192.168.18.150", prefix: 32, secondary: false, label: "eth1" },
      { address: "10.10.0.5", prefix: 16, secondary: false, label: "eth1" },
      { address: "192.168.18.101", prefix: 24, secondary: true, label: "eth1" },
    ]);
  });

  it("finds the failed lines of a batch", () => {
    const stderr =
      "RTNETLINK answers: No such file or directory\nCommand failed -:2\n" +
      "Error: ipv4: Address already assigned.\nCommand failed -:14\n";
    assert.deepEqual(failedBatchLines(stderr), [2, 14]);
    assert.deepEqual(failedBatchLines(""), []);
  });
});
