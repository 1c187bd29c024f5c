#!/usr/bin/env bash
# Installs everything kube-eip's demo, tests and benchmarks need on a fresh Debian machine
# (run as root): Debian packages, Node.js 24 (scripts/node24.sh), the npm dependencies;
# then builds the project, the tests' Kubernetes binaries and the images' stand-in base.
# Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(curl ca-certificates openssl iptables ipset nftables iproute2 iputils-ping iputils-arping arp-scan netcat-openbsd conntrack iperf3 tcpdump procps make gobgpd bird2 buildah runc debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js 24 first on PATH for the rest (test.sh and demo.sh do the same after this).
PATH="$(scripts/node24.sh):$PATH"
export PATH
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
rm -rf dist
npx tsc -p tsconfig.json
# The commit the binaries' --version prints (dist/src/build-info.json).
scripts/build-info.sh
# The tests' real kube-apiserver, kubectl and etcd, cached outside the clone (README.md).
scripts/kube-build.sh
# helm, for the chart's tests (charts/kube-eip), cached the same way.
scripts/helm-build.sh
# The stand-in base image of e2e/images.privileged.test.ts (make image-test), cached the same
# way: once per machine, about 3 minutes.
if [ "$(id -u)" -eq 0 ]; then
  scripts/image-base.sh >/dev/null
fi
