#!/usr/bin/env bash
# Test peers of deploy-artifacts: nginx (for `nginx -t`), docker-compose (for `config`),
# systemd-analyze (for `verify`). Idempotent; does nothing when all are present; never starts a service.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  missing+=(docker-compose)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # nginx-light is gone from newer Debian releases; fall back to nginx.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get install -y -qq --no-install-recommends "${missing[@]/nginx-light/nginx}" >/dev/null
  fi
  # The Debian package may start nginx on port 80; tests never need it running.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
  fi
fi

nginx -v 2>&1 || /usr/sbin/nginx -v
# sed reads to the end: `head` would close the pipe early, and pipefail would fail on the SIGPIPE.
systemd-analyze --version | sed -n 1p
