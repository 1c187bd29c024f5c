// The recorded `ip -json` answers and helpers the RouteManager unit tests share
// (iproute.test.ts, iproute-parse.test.ts, arp-answers.test.ts).
import { type Binding } from "../model/desired.js";
import { plan, type PlanConfig } from "../model/plan.js";
import { TEST_BINDINGS, TEST_PLAN_CONFIG, TEST_ROUTE_OPTIONS } from "../model/test-plan-config.js";
import { FakeRunner, commandLine } from "./fake-runner.js";
import { routeDesired, type RouteDesired } from "./iproute.js";

// Captured with iproute2 6.1.0 in a throwaway netns. Table 1001 holds the desired routes
// plus a /32 throw, a tos route, a metric route and an unreachable route; the rules include
// a stale VMI (10.0.0.12), a rule with an extra selector (iif), and foreign rules (priority
// 500, table 1002); eth1 has the node's 192.168.18.11/24, a foreign 10.10.0.5/16, EIP /32s
// an EIP the previous version added with the network's prefix (192.168.18.101/24), and a
// foreign VIP in the EIP network without our label (192.168.18.150/32, keepalived's).
export const ROUTES = `[{"dst":"default","gateway":"192.168.18.1","dev":"eth1","flags":[]},{"type":"throw","dst":"10.1.2.3","flags":[]},{"dst":"10.5.0.0/16","tos":"0x10","dev":"eth1","scope":"link","flags":[]},{"dst":"10.7.0.0/16","gateway":"192.168.18.1","dev":"eth1","metric":100,"flags":[]},{"type":"unreachable","dst":"10.8.0.0/16","flags":[]},{"type":"throw","dst":"10.96.0.0/12","flags":[]},{"type":"throw","dst":"10.244.0.0/16","flags":[]},{"dst":"192.168.18.0/24","dev":"eth1","scope":"link","flags":[]}]`;
export const RULES = `[{"priority":0,"src":"all","table":"255"},{"priority":500,"src":"10.0.0.0","srclen":8,"table":"254"},{"priority":1001,"src":"10.0.0.1","table":"1001"},{"priority":1001,"src":"10.0.0.11","table":"1001"},{"priority":1001,"src":"10.0.0.12","table":"1001"},{"priority":1001,"src":"10.0.0.1","iif":"eth1","table":"1001"},{"priority":1001,"src":"10.0.0.13","table":"1002"},{"priority":32766,"src":"all","table":"254"},{"priority":32767,"src":"all","table":"253"}]`;
export const ADDRS = `[{"ifindex":3,"link":"eth1-peer","ifname":"eth1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"192.168.18.11","prefixlen":24,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.100","prefixlen":32,"scope":"global","label":"eth1:eip","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.102","prefixlen":32,"scope":"global","label":"eth1:eip","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.150","prefixlen":32,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"10.10.0.5","prefixlen":16,"scope":"global","label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"192.168.18.101","prefixlen":24,"scope":"global","secondary":true,"label":"eth1","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]`;
// Captured the same way: the proxy entries of eth1 (a foreign 10.9.9.9, our stale EIP
// 192.168.18.102, our wanted 192.168.18.100, a foreign unmarked 192.168.18.150), the main table's routes with protocol 225 (a
// /26, EIP host routes through cni0, one through eth0, one with a metric, one via a
// gateway).
export const PROXIES = `[{"dst":"10.9.9.9","proxy":null},{"dst":"192.168.18.102","proxy":null,"protocol":"225"},{"dst":"192.168.18.100","proxy":null,"protocol":"225"},{"dst":"192.168.18.150","proxy":null}]`;
export const ARP_ROUTES = `[{"dst":"192.168.18.64/26","dev":"cni0","scope":"link","flags":[]},{"dst":"192.168.18.100","dev":"cni0","scope":"link","flags":[]},{"dst":"192.168.18.101","dev":"eth0","scope":"link","flags":[]},{"dst":"192.168.18.102","dev":"cni0","scope":"link","metric":100,"flags":[]},{"dst":"192.168.18.103","gateway":"10.244.1.10","dev":"cni0","flags":[]}]`;

export const ROUTE_CMD = "ip -json route show table 1001";
export const RULE_CMD = "ip -json -N rule show";
export const ADDR_CMD = "ip -json -4 addr show dev eth1";
export const PROXY_CMD = "ip -4 -json neigh show proxy dev eth1";
export const ARP_ROUTE_CMD = "ip -json route show table main proto 225";
export const READS = [ROUTE_CMD, RULE_CMD, ADDR_CMD, PROXY_CMD, ARP_ROUTE_CMD];
export const BATCH_CMD = "ip -force -batch -";

export const CONFIG: PlanConfig = {
  ...TEST_PLAN_CONFIG,
  internalNets: ["10.244.0.0/16", "10.96.0.0/12"],
};

export const OPTIONS = TEST_ROUTE_OPTIONS;

export const TWO = TEST_BINDINGS;

export function desired(bindings: readonly Binding[], config: PlanConfig = CONFIG): RouteDesired {
  return routeDesired(plan(config, bindings));
}

export function kernel(routes: string, rules: string, addrs: string): FakeRunner {
  return new FakeRunner().on(ROUTE_CMD, routes).on(RULE_CMD, rules).on(ADDR_CMD, addrs);
}

/** The stdin of the (last) batch call. */
export function batchInput(runner: FakeRunner): string {
  const batches = runner.calls.filter((c) => commandLine(c) === BATCH_CMD);
  return batches.at(-1)?.input ?? "";
}

/** An `ip -json -4 addr show` answer for eth1 with these addresses. */
export function addrJson(
  addrs: { local: string; prefixlen: number; secondary?: boolean; label?: string }[],
): string {
  return JSON.stringify([
    {
      ifindex: 3,
      ifname: "eth1",
      addr_info: addrs.map((a) => ({ family: "inet", scope: "global", label: "eth1", ...a })),
    },
  ]);
}
