#!/usr/bin/env bash
# Peers of the fault-injection suite (tests/scenarios/faults): `ip` (network namespaces,
# veth pairs), `iptables` (the partition), `sqlite3` (integrity check after a full disk),
# `mount`/`umount`/`fallocate` (the small tmpfs data dir). The sshd hosts, the registry and
# busybox come from ssh.sh. Idempotent; installs only what is missing; starts nothing.
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
{ command -v mount && command -v umount && command -v fallocate; } >/dev/null 2>&1 || missing+=(util-linux mount)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages must not start their own system services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi
