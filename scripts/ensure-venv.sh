#!/usr/bin/env bash
# Creates .venv with a Python >= 3.11. On Debian/Ubuntu `python3 -m venv` needs the python3-venv
# package; install it when we may (root or passwordless sudo).
set -euo pipefail
venv="${1:-.venv}"
py="${PYTHON:-python3}"
if [ -x "$venv/bin/python" ]; then exit 0; fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: aitasks needs Python 3.11 or newer ($py is $("$py" -V 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$py" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  pkg="python$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
  echo "python venv support missing: installing $pkg" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else
    echo "error: install $pkg (apt-get install $pkg) and run make again" >&2; exit 1; fi
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" python3-venv >/dev/null || \
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  "$py" -m venv "$venv"
fi
