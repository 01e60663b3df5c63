#!/usr/bin/env bash
# Test peers of the packaging scenarios (tests/scenarios/packaging.rs) and what
# scripts/package/*.sh need: dpkg-dev (dpkg-shlibdeps), binutils (strip),
# adduser (the packages' postinst), man-db (`systemd-analyze verify` reads the units'
# man: Documentation), systemd (systemd-analyze), ca-certificates (the images' CA
# roots). Idempotent; does nothing when all are present; never starts a service.
set -euo pipefail

missing=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v strip >/dev/null 2>&1 || missing+=(binutils)
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || missing+=(adduser)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The machine's package lists usually still have them; refresh (slow) only when not.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# sed reads to the end: `head` would close the pipe early, and pipefail would fail on the
# SIGPIPE (CI once exited 141 here).
dpkg-deb --version | sed -n 1p
