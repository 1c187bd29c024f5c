// The PlanConfig the apply-loop unit tests share: the seed's public network, no internal nets.
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
