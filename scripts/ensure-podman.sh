#!/usr/bin/env bash
# For `make test-containers`: Podman, runc and debootstrap from Debian (apt-get as root or with sudo), and
# podman-compose 1.6.0 from PyPI in a venv of its own (var/containers/venv; Debian's 1.0.3 lacks `!reset`
# and the GPU device reservation). Prints the podman-compose path last.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pkgs=()
command -v podman >/dev/null 2>&1 || pkgs+=(podman)
command -v runc >/dev/null 2>&1 || pkgs+=(runc)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || pkgs+=(debootstrap)
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "installing ${pkgs[*]} (Debian's)" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null \
    || { echo "could not install ${pkgs[*]}: needs apt-get as root or passwordless sudo" >&2; exit 1; }
fi
venv="$here/var/containers/venv"
if [ ! -x "$venv/bin/podman-compose" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q podman-compose==1.6.0 >&2
fi
echo "$venv/bin/podman-compose"
