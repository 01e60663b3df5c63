# Sourced by debs.sh and images.sh: their shared options, the binaries they package
# and the version and commit those binaries report.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE=release
OUT=""
BIN_DIR=""
BUILD=yes

usage_common() {
  cat <<USAGE
  --profile release|debug  which cargo profile's binaries to package (default release)
  --bin-dir DIR            take the binaries from DIR instead of target/<profile>
  --no-build               do not run cargo build first (the binaries must exist)
  --out DIR                where the result goes (default: $1)
USAGE
}

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# Reads one common option at "$1" (and its value at "$2"); sets TAKEN to the number
# of words it took (0 when "$1" is not a common option).
take_common_option() {
  TAKEN=0
  case "$1" in
    --profile)
      [ $# -ge 2 ] || die "--profile needs a value: release or debug"
      case "$2" in release|debug) PROFILE=$2 ;; *) die "--profile \`$2\` is invalid; expected release or debug" ;; esac
      TAKEN=2 ;;
    --bin-dir)
      [ $# -ge 2 ] || die "--bin-dir needs a directory"
      BIN_DIR=$2; TAKEN=2 ;;
    --out)
      [ $# -ge 2 ] || die "--out needs a directory"
      OUT=$2; TAKEN=2 ;;
    --no-build) BUILD=no; TAKEN=1 ;;
  esac
}

# The cargo package of each binary (bins/deploy-agent is package deploy-agent-bin).
cargo_package() {
  case "$1" in
    deploy-agent) echo deploy-agent-bin ;;
    *) echo "$1" ;;
  esac
}

# Builds the given binaries (unless --no-build) and sets BIN_DIR.
build_binaries() {
  if [ -z "$BIN_DIR" ]; then
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
  fi
  if [ "$BUILD" = yes ]; then
    local args=(build --locked)
    [ "$PROFILE" = release ] && args+=(--release)
    local bin
    for bin in "$@"; do args+=(-p "$(cargo_package "$bin")"); done
    (cd "$ROOT" && cargo "${args[@]}")
  fi
  for bin in "$@"; do
    [ -x "$BIN_DIR/$bin" ] || die "no executable \`$BIN_DIR/$bin\`; build it (cargo build -p $(cargo_package "$bin")) or drop --no-build"
  done
}

# The workspace version (from Cargo's metadata of the package; --locked: never
# rewrites Cargo.lock).
workspace_version() {
  (cd "$ROOT" && cargo pkgid --offline --locked -p "$(cargo_package "$1")") | sed 's/.*[#@]//'
}

# What `BIN --version` says: "deployd 0.1.0 (1a2b3c4d5e6f, 2026-12-06)".
# version_of BIN -> 0.1.0; commit_of BIN -> 1a2b3c4d5e6f (or unknown).
version_of() { "$BIN_DIR/$1" --version | awk '{print $2}'; }
commit_of() { "$BIN_DIR/$1" --version | sed -n 's/^[^ ]* [^ ]* (\([^,)]*\).*/\1/p'; }

# Refuses a binary whose version is not the workspace's (a stale build); sets
# VERSION and COMMIT from the first binary.
check_versions() {
  local bin expected got
  expected=$(workspace_version "$1")
  for bin in "$@"; do
    got=$(version_of "$bin")
    [ "$got" = "$expected" ] || die "\`$BIN_DIR/$bin --version\` says $got; expected the workspace version $expected (rebuild it)"
  done
  [[ "$expected" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]] || die "workspace version \`$expected\` is invalid; expected MAJOR.MINOR.PATCH"
  VERSION=$expected
  COMMIT=$(commit_of "$1")
  [ -n "$COMMIT" ] || COMMIT=unknown
  # It goes into the package's Description and the image's labels: hex or `unknown` only.
  [[ "$COMMIT" =~ ^([0-9a-f]{7,40}|unknown)$ ]] || die "\`$BIN_DIR/$1 --version\` names commit \`$COMMIT\`; expected 7 to 40 hex digits or unknown"
  for bin in "$@"; do
    [ "$(commit_of "$bin")" = "$COMMIT" ] || die "\`$bin\` was built from commit $(commit_of "$bin"), \`$1\` from $COMMIT; rebuild both"
  done
}

# The Debian version of packages built from the binaries (after check_versions):
# VERSION itself for a commit tagged v$VERSION (a release) or an unknown commit;
# otherwise VERSION~git<commit time, UTC, YYYYMMDD.HHMMSS>.<commit>: a snapshot on the
# way to VERSION, so each build from a later commit is an upgrade to apt (dpkg compares
# the digits as numbers), the same commit always gives the same version, and the
# release VERSION, tagged, sorts after all of them (`~` sorts before everything). This
# holds when the workspace version is bumped right after a release is tagged, as
# docs/operations.md says. A pre-release VERSION (0.2.0-rc.1) becomes 0.2.0~rc.1: in
# Debian a `-` starts the revision, and ~ keeps it before 0.2.0.
# DEPLOY_DEB_VERSION, when set, is taken instead (a packager building from a tarball,
# where git knows no commit time), checked by dpkg --validate-version.
package_version() {
  if [ -n "${DEPLOY_DEB_VERSION:-}" ]; then
    dpkg --validate-version -- "$DEPLOY_DEB_VERSION" 2>/dev/null \
      || die "DEPLOY_DEB_VERSION \`$DEPLOY_DEB_VERSION\` is invalid; expected a Debian version (dpkg --validate-version), e.g. 0.1.0~git20261206.1"
    echo "$DEPLOY_DEB_VERSION"
    return
  fi
  local version=${VERSION//-/\~}
  if [ "$COMMIT" = unknown ]; then
    echo "$version"
    return
  fi
  local when
  when=$(TZ=UTC git -C "$ROOT" log -1 --format=%cd --date=format-local:%Y%m%d.%H%M%S "$COMMIT" 2>/dev/null) \
    || die "commit $COMMIT (from the binaries' --version) is not in the repository at $ROOT; package binaries built from this checkout, or set DEPLOY_DEB_VERSION"
  if [ -n "$(git -C "$ROOT" tag --list "v$VERSION" --points-at "$COMMIT" 2>/dev/null)" ]; then
    echo "$version"
  else
    echo "$version~git$when.$COMMIT"
  fi
}

# third_party BIN: the Rust crates linked into BIN (name, version, license), as
# Cargo.lock and the crates' manifests say; the workspace's own crates left out.
third_party() {
  echo "Rust crates compiled into $1, with their licenses (from Cargo.lock, \`cargo tree\`):"
  echo
  (cd "$ROOT" && cargo tree --offline --locked -e normal -p "$(cargo_package "$1")" --prefix none -f '{p}: {l}') \
    | grep -v ' (/' | sed 's/ (\*)$//' | LC_ALL=C sort -u
}

# Seconds since the epoch of the binaries' commit (reproducible timestamps; HEAD's
# before check_versions has set COMMIT, or for an unknown one), else of now.
source_date_epoch() {
  local rev=HEAD
  [ -n "${COMMIT:-}" ] && [ "$COMMIT" != unknown ] && rev=$COMMIT
  git -C "$ROOT" log -1 --format=%ct "$rev" 2>/dev/null || date +%s
}
