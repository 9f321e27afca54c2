#!/usr/bin/env bash
# Makes the base image aitasks-base:bookworm without a registry: a Debian root filesystem from
# debootstrap (the mirror apt uses here), imported with `podman import`. Cached under var/containers/:
# the rootfs tarball survives `podman rmi`, so a second run only imports it (seconds), or does nothing
# when the image is already there. Elsewhere, build with the default BASE_IMAGE=debian:bookworm-slim.
# Usage: scripts/container-base.sh   (root; needs debootstrap and podman; CONTAINERS_CONF/
# CONTAINERS_STORAGE_CONF as set by scripts/containers-env.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="$here/var/containers"
image="${AITASKS_BASE_IMAGE:-localhost/aitasks-base:bookworm}"
tarball="$cache/aitasks-base-bookworm.tar"
mkdir -p "$cache"
if podman image exists "$image"; then echo "base image $image: present"; exit 0; fi
if [ ! -s "$tarball" ]; then
  mirror="${DEBIAN_MIRROR:-}"
  if [ -z "$mirror" ]; then  # the first URIs: line of apt's own sources (deb822), else sources.list
    mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | head -1 | awk '{print $2}')"
    [ -n "$mirror" ] || mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -1)"
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  fi
  rootfs="$cache/rootfs.tmp"
  rm -rf "$rootfs"
  echo "debootstrap bookworm from $mirror (a few minutes)"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
  rm -rf "$rootfs"
fi
podman import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
echo "base image $image: imported from $tarball"
