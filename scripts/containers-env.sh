# Sourced by scripts/container-base.sh's callers and `make test-containers`: project-local Podman
# settings, nothing under /etc changed. CONTAINERS_CONF: runtime runc and explicit ulimits
# (containers/containers.conf); CONTAINERS_STORAGE_CONF: images and containers stored under
# var/containers/storage, so the cache is the project's and a `make clean` removes it.
_aitasks_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="$_aitasks_root/containers/containers.conf"
mkdir -p "$_aitasks_root/var/containers/storage" "$_aitasks_root/var/containers/run"
cat > "$_aitasks_root/var/containers/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$_aitasks_root/var/containers/storage"
runroot = "$_aitasks_root/var/containers/run"
CONF
export CONTAINERS_STORAGE_CONF="$_aitasks_root/var/containers/storage.conf"
unset _aitasks_root
