#!/usr/bin/env node
// kube-eip-certs: wiring only. See src/deploy/certs-cli.ts.
import { runCertsCli } from "../deploy/certs-cli.js";
import { ExecRunner } from "../kernel/runner.js";

process.exitCode = await runCertsCli(
  process.argv.slice(2),
  { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) },
  new ExecRunner(),
);
