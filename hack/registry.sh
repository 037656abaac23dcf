#!/usr/bin/env bash
# A local OCI registry (distribution, built by hack/toolchain.sh release) for the release tier:
# hack/release.sh pushes the images and the chart to it, and kind's nodes pull from it through
# a containerd mirror of the release's registry host, so nothing is preloaded.
#
#   hack/registry.sh start            # run it as container kea-registry on 127.0.0.1:$KEA_REGISTRY_PORT
#   hack/registry.sh mirror HOST      # on every node of the kind cluster $KEA_KIND_CLUSTER, pulls
#                                     # from HOST (e.g. ghcr.io) go to the local registry
#   hack/registry.sh unmirror HOST    # undo that
#   hack/registry.sh env              # KEA_REGISTRY=127.0.0.1:PORT, the address to push to
#   hack/registry.sh status
#   hack/registry.sh stop             # stop it; its content (in the container) goes with it
#
# The registry's image is assembled from the toolchain's static binary (no image is pulled).
# Inside the kind network the nodes reach it as kea-registry:5000, over plain HTTP: the mirror
# lists it for pull and resolve only, and the release's host stays the upstream, so a pull that
# the mirror cannot serve fails offline instead of passing unnoticed.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
toolchain_path

NAME=kea-registry
PORT=${KEA_REGISTRY_PORT:-5001}
IMAGE="kea.dev/kea-registry:$REGISTRY_VERSION"
CLUSTER=${KEA_KIND_CLUSTER:-kea}

require_docker

running() { [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" = true ]; }

build_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  local binary root
  binary=$(tool_bin registry)
  [ -x "$binary" ] || die "no registry binary: build it with hack/toolchain.sh release"
  root=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$root'" RETURN
  mkdir -p "$root/etc/distribution" "$root/var/lib/registry" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$binary" "$root/registry"
  cat >"$root/etc/distribution/config.yml" <<'EOF'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
EOF
  printf 'registry:x:65532:65532::/var/lib/registry:/sbin/nologin\n' >"$root/etc/passwd"
  chown -R 65532:65532 "$root/var/lib/registry"
  tar -C "$root" -c . | docker import -c 'USER 65532:65532' -c 'ENTRYPOINT ["/registry"]' \
    -c 'CMD ["serve", "/etc/distribution/config.yml"]' - "$IMAGE" >/dev/null
  log "assembled $IMAGE"
}

start() {
  if running; then log "registry $NAME already running on 127.0.0.1:$PORT"; return 0; fi
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  build_image
  # OTEL_TRACES_EXPORTER=none: distribution exports traces by default, to nowhere here.
  docker run -d --name "$NAME" --read-only --tmpfs /var/lib/registry:uid=65532,gid=65532 \
    -e OTEL_TRACES_EXPORTER=none -p "127.0.0.1:$PORT:5000" "$IMAGE" >/dev/null
  retry 30 curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 ||
    die "the registry did not answer on 127.0.0.1:$PORT: docker logs $NAME"
  log "registry $NAME running on 127.0.0.1:$PORT"
}

stop() {
  docker rm -f "$NAME" >/dev/null 2>&1 && log "stopped $NAME" || log "no $NAME running"
}

nodes() {
  require_cmd kind "build it with hack/toolchain.sh kind"
  kind get nodes --name "$CLUSTER" 2>/dev/null | grep . || die "no kind cluster $CLUSTER"
}

# mirror HOST: each node's containerd sends pulls of HOST/... to the registry, which joins the
# cluster's network for that. containerd reads hosts.toml at each pull: no restart.
mirror() {
  local host=${1:?usage: $0 mirror HOST} node
  running || die "the registry is not running: hack/registry.sh start"
  docker network inspect kind -f '{{range .Containers}}{{.Name}} {{end}}' | grep -qw "$NAME" ||
    docker network connect kind "$NAME"
  for node in $(nodes); do
    docker exec "$node" grep -q 'config_path = "/etc/containerd/certs.d"' /etc/containerd/config.toml ||
      die "$node's containerd does not read /etc/containerd/certs.d: the cluster predates hack/kind/cluster.yaml's containerdConfigPatches (hack/kind.sh down, then up)"
    docker exec -i "$node" sh -c "mkdir -p /etc/containerd/certs.d/$host && cat >/etc/containerd/certs.d/$host/hosts.toml" <<EOF
# $host through the local registry (hack/registry.sh): the release tier's pulls.
server = "https://$host"
[host."http://$NAME:5000"]
  capabilities = ["pull", "resolve"]
EOF
  done
  log "the nodes of $CLUSTER pull $host/... from $NAME"
}

unmirror() {
  local host=${1:?usage: $0 unmirror HOST} node
  for node in $(nodes); do docker exec "$node" rm -rf "/etc/containerd/certs.d/$host"; done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  mirror) shift; mirror "$@" ;;
  unmirror) shift; unmirror "$@" ;;
  env) echo "export KEA_REGISTRY=127.0.0.1:$PORT" ;;
  status) running && echo "$NAME running on 127.0.0.1:$PORT" || { echo "$NAME not running"; exit 1; } ;;
  -h | --help) help_text ;;
  *) die "usage: $0 start|mirror HOST|unmirror HOST|env|status|stop" ;;
esac
