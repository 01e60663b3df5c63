#!/usr/bin/env bash
# Builds the container images of deployd and deploy-agent FROM scratch: the cargo
# binary, the shared libraries ldd names (glibc's loader, libc, libm, libgcc_s), the
# CA roots, and the few files a process needs (/etc/passwd with its non-root user,
# /etc/group, /etc/nsswitch.conf, /tmp). Nothing is pulled from a registry: no base
# image, no shell, no package manager in the image.
#
#   scripts/package/images.sh [--profile release|debug] [--bin-dir DIR] [--no-build]
#                             [--tag TAG] [--prefix PREFIX] [--image NAME]... [--out DIR]
#
# Images: <PREFIX>deployd:<TAG> and <PREFIX>deploy-agent:<TAG>; TAG defaults to
# <version>-<commit>. --out keeps the build contexts there (default: a temp dir,
# removed). Prints each image reference, one a line, on stdout.
set -euo pipefail
# shellcheck source=scripts/package/common.sh
source "$(dirname "$0")/common.sh"

TAG=""
PREFIX=""
IMAGES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help)
      echo "usage: $0 [options]"; usage_common "a temp dir (the build contexts)"
      echo "  --tag TAG                image tag (default <version>-<commit>)"
      echo "  --prefix PREFIX          image name prefix, e.g. registry.example/ (default none)"
      echo "  --image NAME             build only this image: deployd or deploy-agent (repeatable; default both)"
      exit 0 ;;
    --tag)
      [ $# -ge 2 ] || die "--tag needs a value"
      [[ "$2" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag \`$2\` is invalid; expected a Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
      TAG=$2; shift 2; continue ;;
    --image)
      [ $# -ge 2 ] || die "--image needs a value: deployd or deploy-agent"
      case "$2" in deployd|deploy-agent) IMAGES+=("$2") ;; *) die "--image \`$2\` is invalid; expected deployd or deploy-agent" ;; esac
      shift 2; continue ;;
    --prefix)
      [ $# -ge 2 ] || die "--prefix needs a value"
      [[ "$2" =~ ^[a-z0-9._/:-]*$ ]] || die "--prefix \`$2\` is invalid; expected lowercase letters, digits and . _ / : -"
      PREFIX=$2; shift 2; continue ;;
  esac
  take_common_option "$@"
  [ "$TAKEN" -gt 0 ] || die "unknown option \`$1\`; see --help"
  shift "$TAKEN"
done

for tool in docker ldd strip; do
  command -v "$tool" >/dev/null || die "\`$tool\` is not installed"
done
CA_FILE=/etc/ssl/certs/ca-certificates.crt
[ -f "$CA_FILE" ] || die "no \`$CA_FILE\`; install it with \`apt-get install ca-certificates\`"

[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(deployd deploy-agent)
build_binaries "${IMAGES[@]}"
check_versions "${IMAGES[@]}"
[ -n "$TAG" ] || TAG="$VERSION-$COMMIT"
if [ -n "$OUT" ]; then
  WORK=$OUT; mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/deploy-images.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi
umask 022

# stage_rootfs BIN UID ROOTFS: the binary, its libraries at the paths ldd gives
# (the loader's path is in the binary), CA roots, users, NSS config, /tmp.
stage_rootfs() {
  local bin=$1 uid=$2 rootfs=$3 lib
  rm -rf "$rootfs"
  install -D -m 0755 "$BIN_DIR/$bin" "$rootfs/usr/bin/$bin"
  strip --strip-unneeded "$rootfs/usr/bin/$bin"
  # `libx.so => /path (0x…)` and the loader's `/lib64/ld-linux-x86-64.so.2 (0x…)`;
  # `libx.so => not found` would give an image that cannot start.
  local libs
  libs=$(ldd "$BIN_DIR/$bin") || die "ldd \`$BIN_DIR/$bin\` failed"
  if grep -q 'not found' <<<"$libs"; then die "\`$bin\` needs libraries this host lacks: $(grep 'not found' <<<"$libs" | tr -s ' \t' ' ')"; fi
  for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$libs"); do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
  install -D -m 0644 "$CA_FILE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/var/lib/%s:/sbin/nologin\n' \
    "$bin" "$uid" "$uid" "$bin" "$bin" > "$rootfs/etc/passwd"
  printf 'root:x:0:\n%s:x:%s:\n' "$bin" "$uid" > "$rootfs/etc/group"
  # Names resolve through /etc/hosts (Docker writes it), then DNS; glibc >= 2.34
  # has both built in, so no libnss_* files are needed.
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
  install -d -m 1777 "$rootfs/tmp"
  # The licences of what the image ships: ours, and those of the host's libraries.
  install -D -m 0644 "$ROOT/packaging/copyright" "$rootfs/usr/share/doc/$bin/copyright"
  third_party "$bin" > "$rootfs/usr/share/doc/$bin/THIRD-PARTY"
  local pkg
  for pkg in libc6 libgcc-s1; do
    [ -f "/usr/share/doc/$pkg/copyright" ] || die "no \`/usr/share/doc/$pkg/copyright\` (the images ship $pkg's files with it)"
    install -D -m 0644 "/usr/share/doc/$pkg/copyright" "$rootfs/usr/share/doc/$pkg/copyright"
  done
}

# state_tar BIN UID MODE CTX: CTX/state.tar holding /var/lib/BIN owned by UID with
# MODE. `ADD` of a tar keeps owner and mode; `COPY --chown` of a folder would leave
# the destination 0755 (and the legacy builder has no --chmod).
state_tar() {
  local bin=$1 uid=$2 mode=$3 ctx=$4
  install -d -m "$mode" "$ctx/statefs/var/lib/$bin"
  tar --numeric-owner --owner="$uid" --group="$uid" --mtime="@$(source_date_epoch)" \
    -C "$ctx/statefs" -cf "$ctx/state.tar" "var/lib/$bin"
  rm -rf "$ctx/statefs"
}

# labels NAME DESCRIPTION: the OCI labels, version with the commit.
labels() {
  cat <<LABELS
LABEL org.opencontainers.image.title="$1" \\
      org.opencontainers.image.description="$2" \\
      org.opencontainers.image.version="$VERSION+$COMMIT" \\
      org.opencontainers.image.revision="$COMMIT" \\
      org.opencontainers.image.licenses="Apache-2.0" \\
      org.opencontainers.image.base.name="scratch"
LABELS
}

# deployd: uid 10001, state in the volume /var/lib/deployd, listening on all
# addresses of the container (publish the port on 127.0.0.1 or behind TLS).
# No HEALTHCHECK: with no shell or HTTP client in the image, Docker could only run
# deployd itself; orchestrators probe GET /healthz over HTTP instead.
image_deployd() {
  local ctx="$WORK/deployd"
  stage_rootfs deployd 10001 "$ctx/rootfs"
  state_tar deployd 10001 0750 "$ctx"
  {
    echo "FROM scratch"
    echo "COPY rootfs/ /"
    echo "ADD state.tar /"
    echo "ENV DEPLOYD_LISTEN=0.0.0.0:8080 DEPLOYD_DATA_DIR=/var/lib/deployd DEPLOYD_KNOWN_HOSTS=/var/lib/deployd/known_hosts"
    echo "USER 10001:10001"
    echo "WORKDIR /var/lib/deployd"
    echo "EXPOSE 8080"
    echo "VOLUME /var/lib/deployd"
    labels deployd "deployment server: HTTP API and job engine (SQLite in /var/lib/deployd by default)"
    echo 'ENTRYPOINT ["/usr/bin/deployd"]'
  } > "$ctx/Dockerfile"
  docker build -q -t "${PREFIX}deployd:$TAG" "$ctx" >/dev/null
  echo "${PREFIX}deployd:$TAG"
}

# deploy-agent: uid 10002, docker capability only (no Compose CLI in the image),
# the host's engine through the mounted socket: run it with
# `--group-add <gid of the socket>`, root-equivalent on the host.
image_deploy_agent() {
  local ctx="$WORK/deploy-agent"
  stage_rootfs deploy-agent 10002 "$ctx/rootfs"
  state_tar deploy-agent 10002 0700 "$ctx"
  {
    echo "FROM scratch"
    echo "COPY rootfs/ /"
    echo "ADD state.tar /"
    echo "ENV DEPLOY_AGENT_STATE_DIR=/var/lib/deploy-agent DEPLOY_AGENT_CAPABILITIES=docker DEPLOY_AGENT_DOCKER_SOCKET=/var/run/docker.sock"
    echo "USER 10002:10002"
    echo "WORKDIR /var/lib/deploy-agent"
    echo "VOLUME /var/lib/deploy-agent"
    labels deploy-agent "agent running deployd's tasks on the Docker Engine of the mounted socket (docker capability only)"
    echo 'ENTRYPOINT ["/usr/bin/deploy-agent"]'
  } > "$ctx/Dockerfile"
  docker build -q -t "${PREFIX}deploy-agent:$TAG" "$ctx" >/dev/null
  echo "${PREFIX}deploy-agent:$TAG"
}

for image in "${IMAGES[@]}"; do
  "image_${image//-/_}"
done
