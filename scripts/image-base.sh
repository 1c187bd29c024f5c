#!/usr/bin/env bash
# Prints the path of an OCI archive holding a local stand-in for the Dockerfile's base image
# (ARG NODE_IMAGE, node:<version>-bookworm-slim), after making it when needed, for builds on a
# machine that cannot pull it (`make image-test` without registry access). It is Debian
# bookworm (debootstrap --variant=minbase from deb.debian.org) with the Node.js and npm that
# scripts/node24.sh installs in /usr/local, as the official image has them, and the image's
# user node (1000). A real build (make docker-build-*) pulls the real base instead.
#
# Made once per machine into ${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/images/ (about 3
# minutes, 60 MB); the name inside is docker.io/library/<NODE_IMAGE>. Needs root,
# debootstrap and buildah (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

image=$(sed -n 's/^ARG NODE_IMAGE=//p' Dockerfile)
version=${image#node:}
version=${version%%-*}
case "$image" in
  node:*-bookworm-slim) ;;
  *) echo "image-base: the Dockerfile's NODE_IMAGE ($image) is not node:<version>-bookworm-slim" >&2; exit 1 ;;
esac
node_bin=$(scripts/node24.sh)
if [ "$("$node_bin/node" --version)" != "v$version" ]; then
  echo "image-base: the Dockerfile pins Node.js $version, $node_bin/node is $("$node_bin/node" --version)" >&2
  exit 1
fi
node_prefix=$(dirname "$node_bin")

cache="${KUBE_EIP_CACHE:-$HOME/.cache/kube-eip}/images"
archive="$cache/${image/:/-}.oci.tar"
mkdir -p "$cache"
# Two clones may build at once: the second waits for the first.
exec 9>"$cache/.base.lock"
flock 9
if [ ! -e "$archive" ]; then
  echo "image-base: making a stand-in for $image in $archive" >&2
  work=$(mktemp -d "$cache/.base-XXXXXX")
  storage=(--root "$work/storage" --runroot "$work/run" --storage-driver overlay)
  container=""
  cleanup() {
    [ -z "$container" ] || buildah "${storage[@]}" rm "$container" >/dev/null 2>&1 || true
    buildah "${storage[@]}" rmi --all --force >/dev/null 2>&1 || true
    # containers/storage keeps its overlay folder mounted; nothing may stay mounted under $work.
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | xargs -r -n1 umount -l || true
    rm -rf "$work"
  }
  trap cleanup EXIT
  timeout 900 debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >&2
  rootfs="$work/rootfs"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/usr/local/lib/node_modules"
  cp "$node_prefix/bin/node" "$rootfs/usr/local/bin/node"
  cp -r "$node_prefix/lib/node_modules/npm" "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  container=$(buildah "${storage[@]}" from scratch)
  mnt=$(buildah "${storage[@]}" mount "$container")
  cp -a "$rootfs/." "$mnt/"
  buildah "${storage[@]}" umount "$container" >/dev/null
  buildah "${storage[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$version" \
    --cmd node \
    --label org.opencontainers.image.description="kube-eip's local stand-in for $image" \
    "$container"
  buildah "${storage[@]}" commit --quiet "$container" "docker.io/library/$image" >/dev/null
  buildah "${storage[@]}" push --quiet "docker.io/library/$image" "oci-archive:$archive.new:docker.io/library/$image"
  mv "$archive.new" "$archive"
fi
echo "$archive"
