#!/usr/bin/env bash
# The main job: installs what it needs, builds, and runs the demo site (see README).
# Pass --exit to tear the site down at the end instead of waiting for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The Node.js 24 that setup.sh installed (for node and the processes the demo starts).
PATH="$(scripts/node24.sh):$PATH"
export PATH
exec node dist/demo/demo.js "$@"
