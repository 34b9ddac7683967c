#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run all of it:
# lint, types, and every test. Extra arguments go to pytest (e.g. -k upload).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the suite needs. soundfile and PyAV bring their own libsndfile and FFmpeg,
# so none are needed for audio. The suite runs in a private network namespace (unshare from
# util-linux, ip from iproute2), so that mDNS tests never reach a real network. The dashboard
# is tested in Debian's Chromium, driven by Playwright (which never downloads a browser).
# espeak-ng speaks the held-out set the enhancement benchmark and its tests measure on.
APT_PACKAGES=(iproute2 util-linux chromium espeak-ng)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'

.venv/bin/ruff check vocalink_lab tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
