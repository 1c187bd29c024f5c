#!/usr/bin/env bash
# Builds the test infrastructure pinned in hack/kube (a real kube-apiserver, kubectl and
# etcd, from the Kubernetes release that hack/kube/go.mod requires) into a cache outside
# the clone, so that every clone on this machine shares one build:
#   ${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/k8s-<version>/bin/
# Skips the build when that folder holds binaries built from the same go.mod and go.sum.
# The first build takes long on a small machine; see README.md.
set -euo pipefail
cd "$(dirname "$0")/../hack/kube"

version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
released=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
source_hash=$(cat go.mod go.sum | sha256sum | cut -c1-16)
cache="${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/k8s-$version"
bin="$cache/bin"
# Each binary and its main package; the packages are the tool lines of hack/kube/go.mod.
declare -A packages=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [etcd]=go.etcd.io/etcd/server/v3
)
binaries=(kube-apiserver kubectl etcd)

built() {
  [ "$(cat "$bin/.source-hash" 2>/dev/null)" = "$source_hash" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

mkdir -p "$cache"
# Two clones (a test run and CI, say) may build at once: the second waits for the first.
exec 9>"$cache/.lock"
flock 9
if built; then
  echo "kube-build: ${binaries[*]} $version already built in $bin"
  exit 0
fi

# What `kubectl version` and the apiserver's /version report (Kubernetes' own build sets
# the same variables); the build date is the release's, so a rebuild gives the same bytes.
major_minor=${version#v}
major=${major_minor%%.*}
minor=${major_minor#*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$released"
done

echo "kube-build: building ${binaries[*]} $version into $bin (the first build takes a long time)"
start=$(date +%s)
rm -rf "$cache/bin.new"
mkdir -p "$cache/bin.new"
for b in "${binaries[@]}"; do
  # nice: the machine is shared. The binaries share most packages, compiled once.
  CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$cache/bin.new/$b" "${packages[$b]}"
done
echo "$source_hash" >"$cache/bin.new/.source-hash"
rm -rf "$bin"
mv "$cache/bin.new" "$bin"
echo "kube-build: built in $(($(date +%s) - start))s:"
for b in "${binaries[@]}"; do
  echo "  $bin/$b ($(du -h "$bin/$b" | cut -f1))"
done
