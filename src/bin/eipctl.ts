#!/usr/bin/env node
// eipctl: wiring only. See src/cli/eipctl.ts.
import { runEipctl } from "../cli/eipctl.js";

process.exitCode = await runEipctl(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
});
