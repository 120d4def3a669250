#!/usr/bin/env bash
# Builds, from Debian's packages, the images docker-compose.yml needs, for a machine
# that reaches Debian's archive but no image registry (docs/docker.md):
#
#   quotask-local/debian:bookworm   debootstrap --variant=minbase, then `docker import`
#   quotask-local/postgres:15       Debian's postgresql-15    (docker/local/postgres.Dockerfile)
#   quotask-local/redis:7           Debian's redis-server 7.0 (docker/local/redis.Dockerfile)
#   quotask-local/rust:<version>    the host's Rust toolchain (docker/local/rust.Dockerfile)
#
# Idempotent: an image that exists is kept (the Debian base and the Rust image by tag;
# PostgreSQL and Redis are rebuilt from the build cache, a no-op unless their files
# changed). Progress goes to stderr, the builds' own output to a log shown on failure;
# stdout is the lines to use them with compose:
#
#   eval "$(scripts/docker-local-images.sh)" && docker compose up --build
#
# Needs root (debootstrap), a running Docker engine, debootstrap (installed with apt-get
# when missing) and a Rust toolchain on the host.
#
#   QUOTASK_DEBIAN_MIRROR   the archive debootstrap and apt use (default http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mirror=${QUOTASK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=quotask-local/debian:bookworm
postgres=quotask-local/postgres:15
redis=quotask-local/redis:7

say() { printf 'docker-local-images: %s\n' "$*" >&2; }
have() { docker image inspect "$1" >/dev/null 2>&1; }
# The classic builder: it needs no buildx plugin, and it is what the engine has here.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/quotask-images.XXXXXX")
log=$work/build.log
# quiet CMD...: CMD's output to the log; on failure, its end and exit.
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    say "failed: $*; the end of its output:"
    tail -40 "$log" >&2
    exit 1
  fi
}
cleanup() {
  # debootstrap mounts /proc and /sys inside the tree; never delete through a mount.
  awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

if have "$base"; then
  say "$base exists"
else
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y debootstrap >>"$log" 2>&1 || { quiet apt-get update && quiet apt-get install -y debootstrap; }
  fi
  say "debootstrap bookworm (minbase) from $mirror"
  root=$work/rootfs
  quiet debootstrap --variant=minbase bookworm "$root" "$mirror"
  # What the official Debian images add: all three suites, no service starts from
  # package scripts, no package caches.
  rm -f "$root/etc/apt/sources.list"
  security=${mirror%/debian}/debian-security
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  : >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  say "importing it as $base"
  # The engine mounts its own /dev, /proc and /sys.
  tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$root" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$base" >>"$log" 2>&1 ||
    { say "docker import failed"; tail -20 "$log" >&2; exit 1; }
  rm -rf --one-file-system "$root"
fi

say "building $postgres"
quiet docker build --build-arg "BASE=$base" -t "$postgres" -f docker/local/postgres.Dockerfile docker/local
say "building $redis"
quiet docker build --build-arg "BASE=$base" -t "$redis" -f docker/local/redis.Dockerfile docker/local

sysroot=$(rustc --print sysroot)
version=$(rustc --version | awk '{print $2}')
rust=quotask-local/rust:$version
if have "$rust"; then
  say "$rust exists"
else
  say "building $rust from $sysroot"
  ctx=$work/rust
  mkdir -p "$ctx/rust"
  # Hard links where the file system allows: the toolchain is several hundred MB.
  for d in bin lib libexec etc; do
    [[ -e $sysroot/$d ]] || continue
    cp -al "$sysroot/$d" "$ctx/rust/" 2>/dev/null || cp -a "$sysroot/$d" "$ctx/rust/"
  done
  # Sources and documentation are not needed to build.
  rm -rf "$ctx/rust/lib/rustlib/src" "$ctx/rust/lib/rustlib/rustc-src"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  quiet docker build --build-arg "BASE=$base" -t "$rust" -f docker/local/rust.Dockerfile "$ctx"
fi

cat <<EOF
export QUOTASK_BUILD_IMAGE=$rust
export QUOTASK_RUNTIME_IMAGE=$base
export QUOTASK_POSTGRES_IMAGE=$postgres
export QUOTASK_REDIS_IMAGE=$redis
EOF
