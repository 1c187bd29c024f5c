// For the TLS tests: the agent's real gRPC service over a dataplane with no kernel.
import assert from "node:assert/strict";
import { join } from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { parseIpv4Net, type Ipv4Net } from "../common/ipv4.js";
import { TEST_PLAN_CONFIG } from "../model/test-plan-config.js";
import { type AllowList, Authorizer } from "./authz.js";
import { BindingTable } from "./binding-table.js";
import { Dataplane } from "./dataplane.js";
import { AgentMetrics } from "./metrics.js";
import { AgentService, buildGrpcServer } from "./server.js";
import { BindingStore } from "./store.js";

const net = (s: string): Ipv4Net => parseIpv4Net(s) ?? assert.fail(s);

/** An agent allowing `allow`, saving under `dir`/state; not yet bound to a port. */
export function testAgentServer(
  dir: string,
  allow: AllowList,
): { server: grpc.Server; dataplane: Dataplane } {
  const logger = pino({ level: "silent" });
  const metrics = new AgentMetrics();
  const table = new BindingTable();
  const dataplane = new Dataplane({
    table,
    store: new BindingStore(join(dir, "state")),
    config: TEST_PLAN_CONFIG,
    subsystems: [],
    logger,
    metrics,
  });
  const service = new AgentService({
    table,
    dataplane,
    policy: {
      eipCidr: net("192.168.18.0/24"),
      internalNets: [net("10.244.0.0/16")],
      gatewayIp: "192.168.18.1",
    },
    logger,
    metrics,
    authorizer: new Authorizer(allow),
  });
  return { server: buildGrpcServer(service).server, dataplane };
}
