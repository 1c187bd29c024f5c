#!/usr/bin/env bash
# Builds helm, pinned in hack/helm to one Helm release, for the chart's tests
# (charts/kube-eip), into a cache outside the clone that every clone on this machine shares:
#   ${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/helm-<version>/bin/helm
# Skips the build when that folder holds a helm built from the same go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")/../hack/helm"

version=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
source_hash=$(cat go.mod go.sum | sha256sum | cut -c1-16)
cache="${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/helm-$version"
bin="$cache/bin"

built() {
  [ "$(cat "$bin/.source-hash" 2>/dev/null)" = "$source_hash" ] && [ -x "$bin/helm" ]
}

mkdir -p "$cache"
# Two clones (a test run and CI, say) may build at once: the second waits for the first.
exec 9>"$cache/.lock"
flock 9
if built; then
  echo "helm-build: helm $version already built in $bin"
  exit 0
fi

# What `helm version` reports, and the Kubernetes version that `helm template` and
# `helm lint` assume, as Helm's own Makefile sets them (from the client-go it builds with).
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor=${client_go#v0.}
k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

echo "helm-build: building helm $version into $bin"
start=$(date +%s)
rm -rf "$cache/bin.new"
mkdir -p "$cache/bin.new"
# nice: the machine is shared.
CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$cache/bin.new/helm" helm.sh/helm/v3/cmd/helm
echo "$source_hash" >"$cache/bin.new/.source-hash"
rm -rf "$bin"
mv "$cache/bin.new" "$bin"
echo "helm-build: built in $(($(date +%s) - start))s: $bin/helm ($(du -h "$bin/helm" | cut -f1))"
