#!/usr/bin/env bash
# Runs every test: lint and format check, fast unit tests, and (as root) the privileged
# tests that build network-namespace labs and drive the real kernel tools.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The Node.js 24 that setup.sh installed (for node, npx and the tests' child processes).
PATH="$(scripts/node24.sh):$PATH"
export PATH
npx eslint .
npx prettier --check .
# Leftovers of an interrupted earlier run would collide with nothing (names are per run),
# but they waste the machine: remove them first. Only leftovers (--stale: labs whose
# process, which was to remove them on exit, is gone); a demo or a lab kept with
# `kube-eip-lab up` on the same host stays.
node dist/src/bin/lab.js cleanup --prefix keip- --stale >/dev/null
node --test --test-concurrency=1 --test-reporter=spec "dist/**/*.test.js"
# The e2e files that start the lab's agents once more, on the nftables dataplane, so both
# dataplanes run the whole suite (docs/tests.md, "Both dataplanes"). The dataplane,
# traffic, survive, survive-migration and conditions suites run every dataplane by
# themselves; deploy, helm and images start none of the lab's agents.
nftables_e2e=()
for f in dist/e2e/*.privileged.test.js; do
  case "$(basename "$f")" in
  dataplane.* | dataplane-switch.* | traffic.* | survive.* | survive-migration.* | conditions.* | deploy.* | helm.* | images.*) ;;
  *) nftables_e2e+=("$f") ;;
  esac
done
KUBE_EIP_E2E_DATAPLANE=nftables node --test --test-concurrency=1 --test-reporter=spec \
  "${nftables_e2e[@]}"
