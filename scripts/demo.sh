#!/usr/bin/env bash
# The main job: installs what it needs, builds, and runs the demo site (see README).
# Pass --exit to tear the site down at the end instead of waiting for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec node dist/demo/demo.js "$@"
