#!/usr/bin/env bash
# Short fuzz run of every cargo-fuzz target in fuzz/ (not part of CI: nightly, a minute of CPU per target).
#
#   bash scripts/fuzz.sh [target ...]      # all targets when none is named
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh compose_template
#
# Seeds come from fuzz/corpus/<target> (committed, minimised); inputs found on the way
# go to fuzz/target/corpus/<target> (ignored by git). A crash, a failed property or an
# input slower than 10 s stops that target with its input saved under
# fuzz/artifacts/<target>/; the script goes on with the next target and exits 1 at the end.
# To grow the committed corpus: cargo +nightly fuzz cmin <target> <dir>, then copy.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
# No sanitizer: the workspace forbids unsafe code, so what a run looks for is panics,
# broken properties and slow inputs; without ASan builds and runs are about twice as fast.
# Debug assertions (and so overflow checks) stay on.
flags=(--sanitizer none --debug-assertions)

if ! cargo +nightly --version > /dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== cargo fuzz build (${targets[*]})"
cargo +nightly fuzz build "${flags[@]}"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/target/corpus/$t" "fuzz/corpus/$t"
  echo "== fuzz $t for ${seconds}s"
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/target/corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    failed+=("$t")
    echo "== fuzz $t FAILED: the input is under fuzz/artifacts/$t/" >&2
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: failures in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no failure"
