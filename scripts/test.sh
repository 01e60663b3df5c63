#!/usr/bin/env bash
# Runs every check and test of the workspace: the README's test command, and what CI runs.
# Installs what the checks need first (idempotent, fast when already present).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-tools.sh
# Test peers (nginx, PostgreSQL, OpenSSH, a registry, ...): one idempotent script per area.
for peer in scripts/peers/*.sh; do
  [ -e "$peer" ] || continue
  echo "== peers: $peer"
  bash "$peer"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo deny"
# --offline needs every platform's crates in the local cache, not just this host's.
cargo fetch --locked --quiet
cargo deny --offline check licenses bans sources
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
