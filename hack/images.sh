#!/usr/bin/env bash
# Builds the project's container images with the local Docker engine:
#   kea.dev/kea-service:$TAG and kea.dev/kea-operator:$TAG   (TAG defaults to "dev")
#   kea.dev/kea-mariadb:$TAG and kea.dev/kea-redis:$TAG      (hack/store-images.sh)
#   kea.dev/kea-pyweb:$TAG, the e2e tests' image from elsewhere (hack/store-images.sh)
#   kea.dev/kea-s3:$TAG, the e2e tests' S3-compatible server (hack/store-images.sh)
#
# The binaries are compiled on the host (release profile) and copied onto a
# base image that holds only the C runtime (what distroless/cc is). With a
# registry, set BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot; without one
# (the default here), the base is assembled from this machine's Debian
# libraries and imported with `docker import`: no image is pulled.
#
#   hack/images.sh [TAG]
#   hack/images.sh --stores-only [TAG]   # just the store images (no Rust build)
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_docker

STORES_ONLY=false
if [ "${1:-}" = --stores-only ]; then STORES_ONLY=true; shift; fi
TAG=${1:-dev}
if $STORES_ONLY; then exec "$HACK_DIR/store-images.sh" "$TAG"; fi
LOCAL_BASE=kea.dev/cc-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
export DOCKER_BUILDKIT=0 # the machine's docker CLI has no buildx

# A distroless/cc equivalent: glibc, libgcc_s, libm, CA certificates,
# passwd/group with root and nonroot (65532), and a writable /tmp.
build_local_base() {
  docker image inspect "$LOCAL_BASE" >/dev/null 2>&1 && return 0
  log "assembling $LOCAL_BASE from this machine's libraries"
  local root; root=$(mktemp -d)
  mkdir -p "$root"/{etc/ssl/certs,lib/x86_64-linux-gnu,lib64,tmp,home/nonroot}
  chmod 1777 "$root/tmp"
  local lib
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$lib" "$root/lib/x86_64-linux-gnu/"
  done
  cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  chown 65532:65532 "$root/home/nonroot"
  tar -C "$root" -c . | docker import -c 'USER 65532:65532' -c 'WORKDIR /home/nonroot' - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
}

log "compiling kea-service (release) and kea-operator (release-small: built for size)"
(cd "$REPO_ROOT" && cargo build -q --release -p kea-service --bins &&
  cargo build -q --profile release-small -p kea-cli --bins)
TARGET_DIR=$(cargo_target_dir)

[ "$BASE_IMAGE" = "$LOCAL_BASE" ] && build_local_base
CONTEXT=$(mktemp -d)
trap 'rm -rf "$CONTEXT"' EXIT
mkdir -p "$CONTEXT/bin"
cp "$REPO_ROOT/images/Dockerfile" "$CONTEXT/"
for binary in kea-service:release kea-operator:release-small; do
  profile=${binary#*:} binary=${binary%:*}
  cp "$TARGET_DIR/$profile/$binary" "$CONTEXT/bin/"
  run_logged "$CONTEXT/build.log" docker build -q --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg BINARY="$binary" -t "kea.dev/$binary:$TAG" "$CONTEXT"
  log "built kea.dev/$binary:$TAG ($(image_size "kea.dev/$binary:$TAG"))"
done

# The MariaDB and Redis images of the Microservices' data stores (cached; seconds when warm).
"$HACK_DIR/store-images.sh" "$TAG"
