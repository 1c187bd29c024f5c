// The PlanConfig the apply-loop and kernel tests share: the seed's public network, no
// internal nets (each test adds its own), and the bindings they usually hold.
import type { Binding } from "./desired.js";
import type { PlanConfig } from "./plan.js";

export const TEST_PLAN_CONFIG: PlanConfig = {
  internalNets: [],
  gatewayIp: "192.168.18.1",
  gatewayDev: "eth1",
  eipCidr: "192.168.18.0/24",
  arpPoisoning: false,
  cniDev: "cni0",
};

/** RouteManager's options on that network: our table, rule priority and route protocol. */
export const TEST_ROUTE_OPTIONS = {
  table: 1001,
  priority: 1001,
  protocol: 225,
  gatewayDev: "eth1",
  eipCidr: "192.168.18.0/24",
};

/** The tests' usual two bindings on that network. */
export const TEST_BINDINGS: readonly Binding[] = [
  { eip: "192.168.18.100", vmi: "10.0.0.1" },
  { eip: "192.168.18.101", vmi: "10.0.0.11" },
];
