#!/usr/bin/env node
// kube-eip-kube-lab: wiring only. See src/kube-lab/cli.ts.
import { runKubeLab } from "../kube-lab/cli.js";

process.exitCode = await runKubeLab(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
});
