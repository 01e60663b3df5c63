#!/usr/bin/env bash
# Peers of deploy-exec's API executor tests: moto_server (AWS ECS emulator, PyPI moto[server])
# and kmock (Kubernetes API emulator, PyPI). Nomad has no installable agent: its tests use a fake.
# Idempotent and fast when present; starts no service (each test starts its own emulator).
set -euo pipefail

# One interpreter start for the common case (everything present).
if python3 -c 'import moto, kmock' >/dev/null 2>&1 && command -v moto_server >/dev/null 2>&1; then
  exit 0
fi

need=()
python3 -c 'import moto' >/dev/null 2>&1 && command -v moto_server >/dev/null 2>&1 || need+=("moto[server]")
python3 -c 'import kmock' >/dev/null 2>&1 || need+=("kmock")

if [ "${#need[@]}" -gt 0 ]; then
  python3 -m pip install --quiet --disable-pip-version-check "${need[@]}"
fi
