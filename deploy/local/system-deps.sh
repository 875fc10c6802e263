#!/usr/bin/env bash
# System packages the tests need beyond Python, Java/Maven and Node: Debian's headless Chromium
# (the daily brief is rendered in it).  Installs with apt-get when run as root; otherwise says what
# is missing and leaves the Chromium test to skip with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing chromium (Debian) for the brief's rendering test ..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "system-deps: chromium is missing and this is not root; the brief's Chromium test will skip" >&2
fi
for tool in java mvn node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "system-deps: $tool is required (see README)" >&2; exit 1; }
done
