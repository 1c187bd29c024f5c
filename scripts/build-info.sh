#!/usr/bin/env bash
# Writes dist/src/build-info.json after the TypeScript build: the commit the build is made
# from, which every binary's --version prints with the package's version
# (src/common/version.ts). KUBE_EIP_COMMIT gives it (the image build has no .git: the
# Makefile passes it); otherwise `git rev-parse HEAD`, with "-dirty" when tracked files
# differ from it; outside git, "unknown". The file is generated, never committed (dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

commit=${KUBE_EIP_COMMIT:-}
if [ -z "$commit" ]; then
  if commit=$(git rev-parse HEAD 2>/dev/null); then
    git diff --quiet HEAD -- 2>/dev/null || commit+="-dirty"
  else
    commit=unknown
  fi
fi
if ! [[ "$commit" =~ ^[0-9a-zA-Z._-]+$ ]]; then
  echo "build-info: not a commit: $commit" >&2
  exit 2
fi
mkdir -p dist/src
tmp=$(mktemp dist/src/.build-info.XXXXXX)
printf '{"commit":"%s"}\n' "$commit" >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" dist/src/build-info.json
