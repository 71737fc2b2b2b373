#!/usr/bin/env bash
# The whole test suite, as README and .ci/run give it: install the test
# dependencies (and Debian's Chromium for the browser tests, when missing),
# then lint, type check and run every test. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -e '.[test]'
if ! command -v chromium >/dev/null 2>&1 && [ ! -x "${MODELSWAP_CHROMIUM:-/usr/bin/chromium}" ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q chromium
fi
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy --strict modelswap
python3 -m pytest
