#!/usr/bin/env bash
# Test peer of the WinRM executor: the real pywinrm client (PyPI), which drives the fake
# WS-Management endpoint in deploy-exec's tests. No WinRM server exists here; this starts
# no service; also the openssl CLI for the https fake's certificates. Idempotent; does nothing when pywinrm is importable.
set -euo pipefail

# openssl makes the test CA and server certificate of the https fake.
if ! command -v python3 >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  echo "installing python3, pip and openssl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-pip openssl >/dev/null
fi

if ! python3 -c 'import winrm' >/dev/null 2>&1; then
  echo "installing pywinrm"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip install --quiet pywinrm 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pywinrm
fi

python3 -c 'import winrm, importlib.metadata as m; print("pywinrm", m.version("pywinrm"))'
