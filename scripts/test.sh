#!/usr/bin/env bash
# Runs every check and test of the workspace: the README's test command, and what CI runs.
# Installs what the checks need first (idempotent, fast when already present).
set -euo pipefail
cd "$(dirname "$0")/.."

# Disk: incremental caches roughly double the debug target directory and buy
# nothing in a one-shot CI build. Free space is printed so that a full disk is
# visible as such in the log.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
show_disk() { echo "== disk: $(df -h --output=avail . | tail -n1 | tr -d ' ') free here, target $(du -sh target 2>/dev/null | cut -f1 || echo none)"; }
show_disk

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
show_disk
echo "== cargo nextest"
status=0
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
show_disk
exit "$status"
