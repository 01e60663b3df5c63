#!/usr/bin/env bash
# Peers of deploy-store's tests: PostgreSQL's server binaries (initdb, pg_ctl) and the
# non-root user the test clusters run as (PostgreSQL refuses to run as root).
# Idempotent and fast when present; starts no service (each test starts its own cluster).
set -euo pipefail

have_initdb() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if ! have_initdb; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Only the binaries: the package's own cluster is not used by the tests.
  apt-get install -y -qq postgresql >/dev/null
fi

# The same test user as scripts/peers/ssh.sh (which also gives it Docker access and a
# password); created the same way here so the order the scripts run in does not matter.
if [ "$(id -u)" = 0 ] && ! id -u deploytest >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh deploytest
fi
