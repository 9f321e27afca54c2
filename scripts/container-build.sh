#!/usr/bin/env bash
# Builds the images of compose.yaml with Podman: the base image first (scripts/container-base.sh, cached
# under var/containers/), then the aitasks image (Dockerfile) and the Redis/PostgreSQL one
# (containers/datastores.Dockerfile). Wheel folders and file:// indexes in this host's pip configuration
# (find-links, extra-index-url) are mounted read-only into the build and handed to it as
# PIP_LOCAL_FIND_LINKS / PIP_LOCAL_INDEXES, its CA bundle (cert) as PIP_LOCAL_CERT; with a local
# torch-2.13.0 wheel among them, torch comes from there (TORCH_INDEX_URL empty) instead of PyTorch's CPU
# index. Layers are cached in Podman's store (var/containers/storage): a rebuild with the same
# dependencies redoes only the source layers.
# Usage: scripts/container-build.sh [IMAGE [DATASTORES_IMAGE]]
#   (default localhost/aitasks:dev, localhost/aitasks-datastores:dev; root)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
source "$here/scripts/containers-env.sh"
image="${1:-localhost/aitasks:dev}"
datastores="${2:-localhost/aitasks-datastores:dev}"
base="${AITASKS_BASE_IMAGE:-localhost/aitasks-base:bookworm}"
AITASKS_BASE_IMAGE="$base" bash "$here/scripts/container-base.sh"

find_links=() indexes=() mounts=()
pyconf="$(python3 -m pip config list 2>/dev/null || true)"
value() { printf '%s\n' "$pyconf" | sed -n "s/^[^=]*\.$1='\(.*\)'$/\1/p" | tr ' ' '\n'; }
for d in $(value find-links); do
  [ -d "$d" ] && [[ " ${find_links[*]} " != *" $d "* ]] && find_links+=("$d") && mounts+=(-v "$d:$d:ro")
done
for u in $(value extra-index-url); do
  p="${u#file://}"
  if [ "$p" != "$u" ] && [ -d "$p" ]; then
    indexes+=("$u"); root="$(dirname "$p")"; mounts+=(-v "$root:$root:ro")
  fi
done
cert="$(value cert | head -1)"
if [ -n "$cert" ] && [ -f "$cert" ]; then mounts+=(-v "$cert:/run/aitasks-build-ca.crt:ro"); cert=/run/aitasks-build-ca.crt; else cert=""; fi
torch_index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
for d in "${find_links[@]}"; do
  if compgen -G "$d/torch-2.13.0*.whl" >/dev/null; then torch_index=""; fi
done
echo "building $image from $base (local wheels: ${find_links[*]:-none}; local indexes: ${indexes[*]:-none};" \
     "torch index: ${torch_index:-none})"
# --format docker: the OCI format has no HEALTHCHECK (Podman drops it with a warning).
limits=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
podman build --format docker "${limits[@]}" \
  "${mounts[@]}" \
  --build-arg BASE_IMAGE="$base" \
  --build-arg TORCH_INDEX_URL="$torch_index" \
  --build-arg PIP_LOCAL_FIND_LINKS="${find_links[*]}" \
  --build-arg PIP_LOCAL_INDEXES="${indexes[*]}" \
  --build-arg PIP_LOCAL_CERT="$cert" \
  -t "$image" -f "$here/Dockerfile" "$here"
echo "building $datastores from $base"
podman build --format docker "${limits[@]}" --build-arg BASE_IMAGE="$base" -t "$datastores" \
  -f "$here/containers/datastores.Dockerfile" "$here/containers"
