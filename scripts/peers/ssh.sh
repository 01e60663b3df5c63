#!/usr/bin/env bash
# Peers of deploy-exec's SSH tests: OpenSSH server, a registry (and htpasswd for one
# that needs a login), busybox-static for test images, and a dedicated test user.
# Idempotent; installs only what is missing; starts nothing (the deploy-testkit fixtures
# start sshd and the registry as child processes).
set -euo pipefail

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
# htpasswd: the password file of the registry that needs a login (private-registry pulls).
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d 101: the packages must not start their own system services.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
fi
mkdir -p /run/sshd

# The test user: /bin/sh login shell (no slow profile), access to the Docker socket.
user=deploytest
getent group docker >/dev/null || groupadd docker
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh --groups docker "$user"
fi
id -nG "$user" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$user"
# A user created elsewhere (e.g. by an older store.sh) may lack the shell or home the SSH tests need.
[ "$(getent passwd "$user" | cut -d: -f7)" = /bin/sh ] || usermod --shell /bin/sh "$user"
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || { mkdir -p "$home" && chown "$user": "$home"; }
# sshd refuses a locked account ("!" in shadow) even for key auth. Give the user a random
# password, readable by root only, for the password-auth tests (the fixtures' sshd is the only
# one that accepts passwords, and it listens on loopback).
secret_dir=/var/lib/deploy-testkit
password_file="$secret_dir/$user.password"
if [ ! -s "$password_file" ] || [ "$(getent shadow "$user" | cut -d: -f2 | cut -c1)" = '!' ]; then
  install -d -m 0700 "$secret_dir"
  password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
  printf '%s' "$password" > "$password_file"
  chmod 0600 "$password_file"
  echo "$user:$password" | chpasswd
fi
