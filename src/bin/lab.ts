#!/usr/bin/env node
// kube-eip-lab: wiring only. See src/lab/cli.ts.
import { runLab } from "../lab/cli.js";

process.exitCode = await runLab(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
});
