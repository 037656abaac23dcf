#!/usr/bin/env bash
# Builds the images of the data stores kea-operator runs per Microservice, from Debian
# bookworm packages, without a registry (hack/images.sh calls this too):
#   kea.dev/kea-mariadb:$TAG   MariaDB 10.11 with the entrypoint of images/mariadb/
#   kea.dev/kea-redis:$TAG     Redis 7.0
# (TAG defaults to "dev"). Both run as uid/gid 999 on a read-only root filesystem.
# And, for the end-to-end tests of images from elsewhere:
#   kea.dev/kea-pyweb:$TAG     images/pyweb/app.py on Python 3.11: port 80, no health
#                              routes, root by default, as a tutorial's image would be.
#   kea.dev/kea-s3:$TAG        versitygw (hack/toolchain.sh s3), the S3-compatible server of
#                              the bucket backups' tests: its static binary alone, uid 65532.
#
#   hack/store-images.sh [TAG]
#
# Steps, cached under $KEA_CACHE_DIR/images/ and keyed by their recipe:
#   1. base: `debootstrap --variant=minbase bookworm`, shared by both images;
#   2. rootfs of each image: the base + its packages from bookworm, bookworm-updates
#      and bookworm-security (so it carries the security fixes of the day it was built),
#      its own files and users, trimmed of documentation, locales and apt's lists;
#   3. `docker import` of that rootfs, labelled with its key: skipped when the tagged
#      image already carries it, so a warm run takes seconds.
# KEA_STORE_REBUILD=1 starts over (e.g. to pick up newer Debian security updates).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_docker

TAG=${1:-dev}
STORE_CACHE="$KEA_CACHE_DIR/images"
# Empty: no security suite (a mirror that lacks it).
SECURITY_MIRROR=${KEA_DEBIAN_SECURITY_MIRROR-http://deb.debian.org/debian-security}
# The official images' uid/gid, which the pods kea-operator writes run as.
STORE_UID=999
STORE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# mariadb-server-core and mariadb-client-core hold mariadbd, mariadb-install-db and the
# mariadb client without the Perl, Galera and rsync the full packages pull in.
MARIADB_PACKAGES=(mariadb-server-core mariadb-client-core)
REDIS_PACKAGES=(redis-server)

# 1. build_base OUT: a minimal Debian, shared by the images.
build_base() {
  local root="$1.d"
  debootstrap_minbase "$root"
  # The downloaded packages and lists: each image updates its lists anyway.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar_rootfs "$root" "$1"
}

# in_root ROOT COMMAND...: run a command in the rootfs being built.
in_root() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH="$STORE_PATH" DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}

# add_user ROOT NAME HOME: NAME as uid and gid $STORE_UID, or the existing NAME moved
# there (with what it owns).
add_user() {
  local root=$1 name=$2 home=$3 old_uid old_gid holder
  holder=$(in_root "$root" getent group "$STORE_UID" | cut -d: -f1) || true
  [ -z "$holder" ] || [ "$holder" = "$name" ] || die "gid $STORE_UID is taken by $holder in the $name image"
  holder=$(in_root "$root" getent passwd "$STORE_UID" | cut -d: -f1) || true
  [ -z "$holder" ] || [ "$holder" = "$name" ] || die "uid $STORE_UID is taken by $holder in the $name image"
  if old_uid=$(in_root "$root" id -u "$name" 2>/dev/null); then
    old_gid=$(in_root "$root" id -g "$name")
    in_root "$root" groupmod --gid "$STORE_UID" "$name"
    in_root "$root" usermod --uid "$STORE_UID" --gid "$STORE_UID" --home "$home" "$name"
    find "$root" -xdev \( -uid "$old_uid" -o -gid "$old_gid" \) -exec chown -h "$STORE_UID:$STORE_UID" {} +
  else
    in_root "$root" groupadd --system --gid "$STORE_UID" "$name"
    in_root "$root" useradd --system --uid "$STORE_UID" --gid "$STORE_UID" --home-dir "$home" \
      --no-create-home --shell /usr/sbin/nologin "$name"
  fi
}

customize_mariadb() {
  local root=$1 deb binary
  add_user "$root" mysql /var/lib/mysql
  # The liveness probe runs mariadb-admin, which Debian ships in mariadb-client with
  # Perl tools around it: take it (and mariadb-dump, for backups) from that package alone.
  in_root "$root" sh -c 'cd /tmp && apt-get download -qq mariadb-client' >/dev/null 2>&1 ||
    die "apt-get download mariadb-client failed"
  deb=$(find "$root/tmp" -maxdepth 1 -name 'mariadb-client_*.deb' | head -n 1)
  dpkg-deb --fsys-tarfile "$deb" | tar -C "$root" -x ./usr/bin/mariadb-admin ./usr/bin/mariadb-dump
  rm -f "$deb"
  install -m 0755 "$REPO_ROOT/images/mariadb/entrypoint.sh" "$root/usr/local/bin/kea-mariadb-entrypoint"
  install -m 0644 "$REPO_ROOT/images/mariadb/kea.cnf" "$root/etc/mysql/mariadb.conf.d/50-kea.cnf"
  install -d -m 0755 -o "$STORE_UID" -g "$STORE_UID" "$root/var/lib/mysql"
  # Sticky and open to all, like /tmp: `docker run --tmpfs /run/mysqld` copies this
  # mode (not the owner) onto the tmpfs, which must stay writable for any uid.
  install -d -m 1777 -o "$STORE_UID" -g "$STORE_UID" "$root/run/mysqld"
  for binary in mariadbd mariadb mariadb-admin; do
    in_root "$root" "$binary" --version >/dev/null || die "$binary does not run in the image"
  done
}
MARIADB_IMPORT=(
  -c "USER $STORE_UID:$STORE_UID"
  -c 'ENTRYPOINT ["/usr/local/bin/kea-mariadb-entrypoint"]'
  -c 'CMD ["mariadbd"]'
  -c 'EXPOSE 3306'
  -c 'VOLUME /var/lib/mysql'
)

customize_redis() {
  local root=$1
  add_user "$root" redis /data
  install -d -m 0755 -o "$STORE_UID" -g "$STORE_UID" "$root/data"
  # Debian's service files, unused here.
  rm -rf "$root/etc/init.d/redis-server" "$root/etc/logrotate.d/redis-server" "$root/etc/default/redis-server"
  in_root "$root" redis-server --version >/dev/null || die "redis-server does not run in the image"
}
REDIS_IMPORT=(
  -c "USER $STORE_UID:$STORE_UID"
  -c 'WORKDIR /data'
  # The operator sets its own command (port, password, persistence); this default is
  # safe on its own: no password, so protected mode keeps it to loopback.
  -c 'CMD ["redis-server", "--dir", "/data"]'
  -c 'EXPOSE 6379'
  -c 'VOLUME /data'
)

customize_pyweb() {
  local root=$1
  install -d -m 0755 "$root/app"
  install -m 0644 "$REPO_ROOT/images/pyweb/app.py" "$root/app/app.py"
  in_root "$root" python3 -c 'import http.server' || die "python3 lacks http.server in the pyweb image"
}
PYWEB_IMPORT=(
  # No USER: root, like the images of most tutorials (the operator runs it as non-root).
  -c 'WORKDIR /app'
  -c 'ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1'
  -c 'CMD ["python3", "/app/app.py"]'
  -c 'EXPOSE 80'
)

# Documentation, locales, apt's lists and caches, logs: nothing the servers read.
# Copyright files stay.
trim_rootfs() {
  local root=$1
  in_root "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/lib/dpkg/*-old "$root"/var/log/* "$root"/tmp/* "$root"/root/.[!.]* \
    "$root"/usr/share/{man,info,locale,lintian,linda,bug,doc-base,bash-completion,menu}
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -f "$root/usr/sbin/policy-rc.d"
  # Docker and the kubelet mount their own; these serve tools run in the image alone.
  : >"$root/etc/resolv.conf" && : >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  chmod 1777 "$root/tmp"
}

# install_packages ROOT PACKAGE...: the packages, with the day's updates, in a rootfs.
install_packages() {
  local root=$1
  shift
  in_root "$root" apt-get update -qq && in_root "$root" apt-get upgrade -y -qq &&
    in_root "$root" apt-get install -y -qq --no-install-recommends "$@"
}

# 2. build_rootfs OUT NAME PACKAGE...: the rootfs of one image: the base, its packages, its files.
build_rootfs() {
  local out=$1 root="$1.d" name=$2
  shift 2
  cached_artifact "store image base" "$BASE_TAR" build_base
  rm -rf "$root" && mkdir -p "$root"
  tar -C "$root" -xf "$BASE_TAR"
  log "installing $* into the $name rootfs"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  # Packaged servers must not start in the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 0755 "$root/usr/sbin/policy-rc.d"
  {
    echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE main"
    echo "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main"
    [ -z "$SECURITY_MIRROR" ] || echo "deb $SECURITY_MIRROR $DEBIAN_SUITE-security main"
  } >"$root/etc/apt/sources.list"
  run_logged "$STORE_CACHE/$name-apt.log" install_packages "$root" "$@"
  "customize_$name" "$root"
  trim_rootfs "$root"
  tar_rootfs "$root" "$out"
}

# 3. build_image NAME "PACKAGE..." DOCKER_IMPORT_OPTION...: kea.dev/kea-NAME:$TAG, rebuilt
# only when its key (base, packages, recipe, images/NAME/) changes.
build_image() {
  local name=$1 image="kea.dev/kea-$1:$TAG" key start=$EPOCHREALTIME packages changes
  read -ra packages <<<"$2"
  changes=("${@:3}")
  key=$( {
    echo "$BASE_KEY" "$STORE_UID" "${packages[@]}" "${changes[@]}"
    declare -f in_root install_packages build_rootfs trim_rootfs tar_rootfs add_user "customize_$name"
    if [ -d "$REPO_ROOT/images/$name" ]; then
      find "$REPO_ROOT/images/$name" -type f | sort | xargs cat
    fi
  } | cache_key)
  if [ "$(image_inputs "$image")" = "$key" ]; then
    log "$image up to date ($(image_size "$image"))"
    return 0
  fi
  cached_artifact "$name rootfs" "$STORE_CACHE/store-$name-$key.tar" build_rootfs "$name" "${packages[@]}"
  docker import "${changes[@]}" -c "ENV PATH=$STORE_PATH LANG=C.UTF-8" \
    -c "LABEL dev.kea.inputs=$key" "$STORE_CACHE/store-$name-$key.tar" "$image" >/dev/null
  log "built $image ($(image_size "$image"), $(seconds_since "$start"))"
}

# Keyed by the recipe: changing it rebuilds the base, and so the images.
BASE_KEY=$( { echo "$DEBIAN_SUITE"; declare -f build_base debootstrap_minbase tar_rootfs; } | cache_key)
BASE_TAR="$STORE_CACHE/base-$DEBIAN_SUITE-$BASE_KEY.tar"
if [ "${KEA_STORE_REBUILD:-0}" = 1 ]; then
  rm -f "$STORE_CACHE"/base-*.tar "$STORE_CACHE"/store-*.tar
fi
build_image mariadb "${MARIADB_PACKAGES[*]}" "${MARIADB_IMPORT[@]}"
build_image redis "${REDIS_PACKAGES[*]}" "${REDIS_IMPORT[@]}"
build_image pyweb python3 "${PYWEB_IMPORT[@]}"

# build_s3_image: versitygw's static binary on an empty filesystem, keyed by its version.
build_s3_image() {
  local image="kea.dev/kea-s3:$TAG" key root
  "$HACK_DIR/toolchain.sh" s3
  key=$(echo "versitygw $VERSITYGW_VERSION" | cache_key)
  if [ "$(image_inputs "$image")" = "$key" ]; then
    log "$image up to date ($(image_size "$image"))"
    return 0
  fi
  root=$(mktemp -d)
  mkdir -p "$root/usr/local/bin" "$root/tmp" && chmod 1777 "$root/tmp"
  cp "$(tool_bin versitygw)" "$root/usr/local/bin/versitygw"
  tar -C "$root" -c . | docker import -c 'USER 65532:65532' \
    -c 'ENTRYPOINT ["/usr/local/bin/versitygw"]' -c "LABEL dev.kea.inputs=$key" - "$image" >/dev/null
  rm -rf "$root"
  log "built $image ($(image_size "$image"))"
}
build_s3_image
