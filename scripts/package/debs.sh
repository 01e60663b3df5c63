#!/usr/bin/env bash
# Builds the .deb packages of deployd, deployctl and deploy-agent from the cargo
# binaries: stages each package's tree (binary, man pages, completions, copyright,
# config, systemd unit, maintainer scripts from packaging/) and lets Debian's own
# dpkg-deb write the archive. Depends is computed by dpkg-shlibdeps (dpkg-dev).
#
#   scripts/package/debs.sh [--profile release|debug] [--out DIR] [--bin-dir DIR] [--no-build]
#
# Prints the path of each package written, one a line, on stdout.
set -euo pipefail
# shellcheck source=scripts/package/common.sh
source "$(dirname "$0")/common.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help)
      echo "usage: $0 [options]"; usage_common "target/debian"; exit 0 ;;
  esac
  take_common_option "$@"
  [ "$TAKEN" -gt 0 ] || die "unknown option \`$1\`; see --help"
  shift "$TAKEN"
done
[ -n "$OUT" ] || OUT="$ROOT/target/debian"

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || die "\`$tool\` is not installed; install it with \`apt-get install dpkg-dev\` (scripts/peers/packaging.sh does)"
done

BINS=(deployd deployctl deploy-agent)
build_binaries "${BINS[@]}"
check_versions "${BINS[@]}"
DEB_VERSION=$(package_version)
ARCH=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(source_date_epoch)}
MAINTAINER="deploy maintainers <deploy@example.invalid>"
# Debug binaries are for tests: fast compression. Release: dpkg-deb's default (xz).
if [ "$PROFILE" = debug ]; then COMPRESS=(-Zgzip -z1); else COMPRESS=(); fi

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/deploy-debs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
umask 022

# stage_common PKG STAGE: the binary (stripped: Debian ships no debug info in the
# main package), its man pages (gzip -9n) and completions, the copyright file.
stage_common() {
  local pkg=$1 stage=$2 docs="$WORK/$1-docs"
  install -D -m 0755 "$BIN_DIR/$pkg" "$stage/usr/bin/$pkg"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/$pkg"
  local said
  said=$("$BIN_DIR/$pkg" generate-docs --out "$docs" 2>&1) || die "\`$pkg generate-docs\` failed: $said"
  mkdir -p "$stage/usr/share"
  cp -r "$docs/." "$stage/usr/share/"
  gzip -9n "$stage"/usr/share/man/man1/*.1
  install -D -m 0644 "$ROOT/packaging/copyright" "$stage/usr/share/doc/$pkg/copyright"
  changelog "$pkg" | gzip -9n > "$stage/usr/share/doc/$pkg/changelog.gz"
  third_party "$pkg" > "$stage/usr/share/doc/$pkg/THIRD-PARTY"
  [ -s "$stage/usr/share/doc/$pkg/THIRD-PARTY" ] || die "cargo tree listed no crates of \`$pkg\`"
}

# changelog PKG: the one entry of this build (Debian policy 12.7 wants a changelog;
# the project's history is its git log).
changelog() {
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s (%s profile); history: git log.\n\n -- %s  %s\n' \
    "$1" "$DEB_VERSION" "$COMMIT" "$PROFILE" "$MAINTAINER" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
}

# stage_service PKG STAGE CONFIG ENABLE STATE_MODE: config under /etc (a conffile),
# the unit, and the maintainer scripts with the package's names filled in.
stage_service() {
  local pkg=$1 stage=$2 config=$3 enable=$4 state_mode=$5 script
  install -D -m 0644 "$ROOT/packaging/$pkg/$(basename "$config")" "$stage$config"
  # /usr/lib (not /lib): where Debian 13 wants units; Debian 12's systemd and
  # deb-systemd-helper look there too.
  install -D -m 0644 "$ROOT/packaging/$pkg/$pkg.service" "$stage/usr/lib/systemd/system/$pkg.service"
  mkdir -p "$stage/DEBIAN"
  echo "$config" > "$stage/DEBIAN/conffiles"
  for script in postinst prerm postrm; do
    sed -e "s|@PACKAGE@|$pkg|g" -e "s|@CONFIG@|$config|g" -e "s|@ENABLE@|$enable|g" \
        -e "s|@STATE_MODE@|$state_mode|g" "$ROOT/packaging/maintainer/$script" > "$stage/DEBIAN/$script"
    chmod 0755 "$stage/DEBIAN/$script"
  done
}

# shlibs_depends STAGE BIN: dpkg-shlibdeps' Depends for the binary (libc6, libgcc-s1).
shlibs_depends() {
  local dir="$WORK/shlibs" said
  mkdir -p "$dir/debian"
  printf 'Source: deploy\n\nPackage: deploy\nArchitecture: any\n' > "$dir/debian/control"
  # Its warnings (e.g. "binary … contains an unresolvable reference") are noise
  # here; shown when it fails.
  said=$(cd "$dir" && dpkg-shlibdeps -O -e "$1" 2>"$dir/stderr") || die "dpkg-shlibdeps \`$1\` failed: $(cat "$dir/stderr")"
  sed -n 's/^shlibs:Depends=//p' <<<"$said"
}

# finish PKG STAGE DEPENDS EXTRA_FIELDS DESCRIPTION: control, md5sums, timestamps,
# then dpkg-deb --build --root-owner-group.
finish() {
  local pkg=$1 stage=$2 depends=$3 extra=$4 description=$5 size deb
  mkdir -p "$stage/DEBIAN"
  # Conffiles are checked by dpkg through DEBIAN/conffiles, not md5sums (as dh_md5sums).
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
    | grep -vxF -f <(sed 's|^/||' "$stage/DEBIAN/conffiles" 2>/dev/null || true) \
    | tr '\n' '\0' | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $DEB_VERSION"
    echo "Architecture: $ARCH"
    echo "Maintainer: $MAINTAINER"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Description: $description"
    echo " Built from commit $COMMIT ($PROFILE profile)."
  } > "$stage/DEBIAN/control"
  find "$stage" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
  deb="$OUT/${pkg}_${DEB_VERSION}_${ARCH}.deb"
  dpkg-deb "${COMPRESS[@]}" --root-owner-group --build "$stage" "$deb" >/dev/null
  echo "$deb"
}

for pkg in "${BINS[@]}"; do
  stage="$WORK/$pkg"
  stage_common "$pkg" "$stage"
  depends=$(shlibs_depends "$stage/usr/bin/$pkg")
  [ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies of \`$pkg\`"
  case "$pkg" in
    deployd)
      stage_service deployd "$stage" /etc/deployd/deployd.toml yes 0750
      finish deployd "$stage" "$depends, adduser" "" \
        "deployment server: HTTP API and job engine
 deployd keeps releases, environments and targets, and carries out deployment
 jobs (waves, health verification, retries, rollback) over SSH, WinRM, platform
 APIs and agents. Embedded SQLite by default, PostgreSQL for replicas. Runs as
 the deployd system service (hardened systemd unit, state in /var/lib/deployd)." ;;
    deployctl)
      finish deployctl "$stage" "$depends" "" \
        "command-line client of deployd
 deployctl drives deployd's HTTP API: environments, targets, releases, deploys
 followed live, jobs, logs, rollbacks, tokens and agents." ;;
    deploy-agent)
      stage_service deploy-agent "$stage" /etc/deploy-agent/agent.toml no 0700
      finish deploy-agent "$stage" "$depends, adduser" \
        "Recommends: docker.io | docker-ce
Suggests: docker-compose" \
        "agent running deployd's tasks on the local Docker Engine
 deploy-agent connects out to deployd, long-polls for tasks and runs them on
 this host's Docker Engine (and Compose CLI). Its service user is in the docker
 group, which is root-equivalent on the host. Not enabled on install: configure
 /etc/deploy-agent/agent.toml first." ;;
  esac
done
