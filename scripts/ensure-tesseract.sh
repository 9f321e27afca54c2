#!/usr/bin/env bash
# Makes Debian's Tesseract OCR (with its English data) and the DejaVu fonts available: OCR of scanned
# pages in the document pipeline, and the fonts the tests use to render a "scanned" page.
# apt-get as root or with sudo. Without it, says so and goes on: OCR then fails with a clear error.
set -euo pipefail
font=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
if command -v tesseract >/dev/null 2>&1 && [ -f "$font" ]; then exit 0; fi
echo "tesseract or DejaVu fonts not found: installing Debian's tesseract-ocr and fonts-dejavu-core" >&2
pkgs=(tesseract-ocr fonts-dejavu-core)
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null && exit 0
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null && exit 0
  fi
fi
echo "WARNING: could not install tesseract-ocr (needs apt-get as root or passwordless sudo)." >&2
echo "         OCR of scanned pages and tests/test_documents_pipeline.py will fail until 'tesseract' is on PATH." >&2
exit 0
