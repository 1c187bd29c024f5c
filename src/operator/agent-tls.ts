// The operator's agent TLS files, renewed without a restart (tls-files.ts): when they change,
// new calls go through new channels that read them, and the metric tells each
// certificate's seconds to expiry.
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { TlsFiles } from "../common/agent-api.js";
import { TlsFileWatch } from "../common/tls-files.js";
import type { AgentPool } from "./agents.js";
import type { OperatorMetrics } from "./metrics.js";

export function watchAgentTls(
  tls: TlsFiles,
  agents: AgentPool,
  logger: Logger,
  metrics: OperatorMetrics,
): TlsFileWatch {
  const read = (p?: string) => (p ? readFileSync(p) : undefined);
  const initial = { cert: read(tls.cert), key: read(tls.key), ca: read(tls.ca) };
  const watch = new TlsFileWatch(
    {
      files: tls,
      logger,
      onChange: () => agents.renewTls(),
      onExpiry: (file, seconds) => metrics.tlsExpiry.set({ file }, seconds),
    },
    Object.fromEntries(Object.entries(initial).filter(([, v]) => v !== undefined)),
  );
  void watch.check();
  watch.start();
  return watch;
}
