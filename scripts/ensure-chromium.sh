#!/usr/bin/env bash
# Makes Debian's Chromium available for the dashboard tests and scripts/screenshots.py (Playwright
# drives it; Playwright never downloads a browser here): apt-get as root or with sudo. Without it,
# says so and goes on: the dashboard tests then fail with the same explanation.
set -euo pipefail
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then exit 0; fi
echo "chromium not found: installing Debian's chromium (for the dashboard tests)" >&2
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0
  fi
fi
echo "WARNING: could not install chromium (needs apt-get as root or passwordless sudo)." >&2
echo "         tests/test_dashboard.py will fail until $chromium exists (or CHROMIUM_PATH points at one)." >&2
exit 0
