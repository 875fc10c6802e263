#!/usr/bin/env bash
# System packages the tests need beyond Python, Java/Maven and Node: Debian's headless Chromium
# (the daily brief is rendered in it) and a CJK font (without one Chinese text renders as empty
# boxes, which tests/integration/test_report.py detects and fails on).  Installs with apt-get when
# run as root; otherwise says what is missing.
set -euo pipefail
have_font() { command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh family | grep -q .; }
if ! command -v chromium >/dev/null 2>&1 || ! have_font; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing chromium and fonts-noto-cjk (Debian) for the brief's rendering tests ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-noto-cjk fontconfig >/dev/null
  else
    echo "system-deps: chromium or a CJK font is missing and this is not root: install chromium and" \
      "fonts-noto-cjk (without chromium the brief's browser tests skip; without the font they fail)" >&2
  fi
fi
for tool in java mvn node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "system-deps: $tool is required (see README)" >&2; exit 1; }
done
