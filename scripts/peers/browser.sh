#!/usr/bin/env bash
# Peers of the web console's browser test (tests/scenarios/console.rs): headless Chromium
# and its WebDriver server, Debian's `chromium` and `chromium-driver`. Idempotent and fast
# when present; starts nothing (the test starts chromedriver on a free loopback port).
set -euo pipefail

if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  exit 0
fi

echo "installing chromium chromium-driver"
export DEBIAN_FRONTEND=noninteractive
# The package lists may be fresh enough already; refresh them only when the install fails.
if ! apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; then
  apt-get update -qq
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
fi
chromedriver --version
