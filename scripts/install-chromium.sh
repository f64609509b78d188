#!/bin/sh
# Install Debian's Chromium for the dashboard browser tests (tests/browser/).
# The tests drive /usr/bin/chromium through Playwright for Python; they never run `playwright install`.
# Needs root (or sudo) and a reachable Debian mirror; does nothing when Chromium is already there.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium is already installed: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -n "$0" "$@"
    fi
    echo "install-chromium.sh: run as root (apt-get needs it), e.g. sudo $0" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core

if [ ! -x "$CHROMIUM" ]; then
    echo "install-chromium.sh: apt-get finished but $CHROMIUM is missing" >&2
    exit 1
fi
echo "installed: $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM")"
