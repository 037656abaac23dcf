#!/usr/bin/env bash
# A kind cluster ("kea": one control-plane node and two workers) for end-to-end checks,
# offline by default, with kube-router as the pod network and NetworkPolicy controller
# and metrics-server for `kubectl top` and the HPA.
#
#   hack/kind.sh up      # build/reuse the node image, create the cluster, load kea's images
#   hack/kind.sh load    # (re)load kea.dev/kea-{service,operator,mariadb,redis}:dev
#   hack/kind.sh load IMAGE...   # (re)load just these
#   hack/kind.sh e2e     # deploy/ + deploy/examples/, then check the demo through port-forward
#   hack/kind.sh down    # delete the cluster
#   hack/kind.sh status
#   hack/kind.sh prune   # delete the kea clusters that a dockerd or machine restart broke
#
# Without a registry (the default) the node image comes from hack/kind-node-image.sh.
# With one, KEA_KIND_REGISTRY=1 uses kind's stock node image for its release instead
# (or KEA_KIND_NODE_IMAGE=<image> names any image).
# KEA_KIND_CLUSTER names the cluster (default kea, the demo's; the tests use kea-e2e),
# KEA_KIND_KUBECONFIG its kubeconfig (default $KEA_CACHE_DIR/kind/kubeconfig[-NAME]),
# KEA_KIND_WORKERS the number of worker nodes (default: hack/kind/cluster.yaml's two; 0
# for a single node), KEA_KIND_METRICS=0 skips metrics-server.
# The kubeconfig is $KEA_CACHE_DIR/kind/kubeconfig (not ~/.kube/config):
#   export KUBECONFIG=$HOME/.cache/kea/kind/kubeconfig
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
toolchain_path

CLUSTER=${KEA_KIND_CLUSTER:-kea}
CONFIG="$HACK_DIR/kind/cluster.yaml"
export KUBECONFIG=${KEA_KIND_KUBECONFIG:-$(kind_kubeconfig "$CLUSTER")}
# kea-operator's own images, those of the data stores it runs per Microservice, and the
# end-to-end tests' image from elsewhere (kea-pyweb) and S3-compatible server (kea-s3).
KEA_IMAGES=()
for name in kea-service kea-operator kea-mariadb kea-redis kea-pyweb kea-s3; do KEA_IMAGES+=("kea.dev/$name:${KEA_IMAGE_TAG:-dev}"); done
WAIT=${KEA_KIND_WAIT:-300s}
METRICS_MANIFEST="$HACK_DIR/kind/metrics-server.yaml"

require_cmd kind "build it with hack/toolchain.sh kind"
require_cmd kubectl "build it with hack/toolchain.sh kind"
require_docker

exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

node_image() {
  if [ -n "${KEA_KIND_NODE_IMAGE:-}" ]; then
    echo "$KEA_KIND_NODE_IMAGE"
  elif [ "${KEA_KIND_REGISTRY:-0}" = 1 ]; then
    echo "" # kind's default image for its release
  else
    "$HACK_DIR/kind-node-image.sh" >&2 || die "building the node image failed"
    "$HACK_DIR/kind-node-image.sh" name
  fi
}

load() {
  local image
  [ $# -gt 0 ] || set -- "${KEA_IMAGES[@]}"
  for image in "$@"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "$image is missing: build it with hack/images.sh"
    log "loading $image into $CLUSTER"
    kind load docker-image --name "$CLUSTER" "$image" >/dev/null
  done
}

# kind's nodes are containers. When dockerd or the machine restarts they start again, but the
# cluster's Service network does not come back (pods time out on the API server's ClusterIP,
# so CoreDNS, metrics-server and the operator never get ready), and its pods still take CPU.
# A node container started more than a minute after it was created has been restarted.
restarted_clusters() {
  local cluster node created started
  for cluster in $(kind get clusters 2>/dev/null); do
    [[ $cluster == kea* || $cluster == "$CLUSTER" ]] || continue
    for node in $(kind get nodes --name "$cluster" 2>/dev/null); do
      read -r created started < <(docker inspect -f '{{.Created}} {{.State.StartedAt}}' "$node" 2>/dev/null) || continue
      if (($(date -d "$started" +%s) - $(date -d "$created" +%s) > 60)); then
        echo "$cluster"
        break
      fi
    done
  done
}

prune() {
  local stale
  for stale in $(restarted_clusters); do
    log "kind cluster $stale was restarted (dockerd or the machine restarted) and its Service network is gone: deleting it"
    kind delete cluster --name "$stale" >/dev/null 2>&1 || true
  done
}

up() {
  local image args=()
  prune
  # A cluster whose node container was stopped (e.g. dockerd was killed) does not come
  # back by itself: recreate it.
  if exists && ! kubectl --kubeconfig "$KUBECONFIG" get --raw /readyz >/dev/null 2>&1; then
    log "cluster $CLUSTER exists but does not answer: recreating it"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  if exists; then
    log "cluster $CLUSTER exists (hack/kind.sh down to recreate)"
  else
    image=$(node_image)
    local config
    config=$(mktemp)
    # shellcheck disable=SC2064 # expand now
    trap "rm -f '$config'" RETURN
    if [ -n "${KEA_KIND_WORKERS:-}" ]; then
      [[ $KEA_KIND_WORKERS =~ ^[0-9]+$ ]] || die "KEA_KIND_WORKERS must be a number"
      grep -v 'role: worker' "$CONFIG" >"$config"
      for _ in $(seq "$KEA_KIND_WORKERS"); do echo '  - role: worker' >>"$config"; done
    else
      cp "$CONFIG" "$config"
    fi
    # The default CNI is kube-router in our node image (/kind/manifests/default-cni.yaml),
    # kindnet in kind's stock one.
    if [ -n "$image" ]; then args+=(--image "$image"); fi
    # kind bind-mounts the host's /lib/modules; some VMs have none.
    if [ ! -d /lib/modules ]; then
      log "creating an empty /lib/modules (kind mounts it; this host has none)"
      mkdir -p /lib/modules
    fi
    mkdir -p "$(dirname "$KUBECONFIG")"
    timed "kind create cluster $CLUSTER (${image:-the stock node image of kind $KIND_VERSION})" \
      kind create cluster --name "$CLUSTER" --config "$config" --kubeconfig "$KUBECONFIG" \
      --wait "$WAIT" "${args[@]}"
  fi
  load
  log "waiting for the nodes, the pod network and CoreDNS"
  kubectl wait --for=condition=Ready node --all --timeout="$WAIT" >/dev/null
  if kubectl -n kube-system get daemonset/kube-router >/dev/null 2>&1; then
    kubectl -n kube-system rollout status daemonset/kube-router --timeout="$WAIT" >/dev/null
  fi
  kubectl -n kube-system rollout status deployment/coredns --timeout="$WAIT" >/dev/null
  metrics_server
  log "cluster $CLUSTER ready; export KUBECONFIG=$KUBECONFIG"
}

# metrics-server (hack/kind/metrics-server.yaml): its image is preloaded in our node
# image; with kind's stock image it is pulled from registry.k8s.io instead. The APIService
# goes last, once the Service's ClusterIP leads to a ready pod (see the manifest).
metrics_server() {
  [ "${KEA_KIND_METRICS:-1}" = 0 ] && return 0
  local manifest
  manifest=$(cat "$METRICS_MANIFEST")
  if [ "${KEA_KIND_REGISTRY:-0}" = 1 ] && [ -z "${KEA_KIND_NODE_IMAGE:-}" ]; then
    manifest=${manifest//image: kea.dev\/metrics-server:/image: registry.k8s.io\/metrics-server\/metrics-server:}
  fi
  log "applying metrics-server"
  kubectl apply -l 'kea.dev/apply-after-rollout!=true' -f - <<<"$manifest" >/dev/null
  kubectl -n kube-system rollout status deployment/metrics-server --timeout="$WAIT" >/dev/null
  kubectl apply -l 'kea.dev/apply-after-rollout=true' -f - <<<"$manifest" >/dev/null
  kubectl wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout="$WAIT" >/dev/null
}

down() {
  if exists; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  else
    log "no kind cluster $CLUSTER"
  fi
}

# e2e: the operator and the example Microservices on the cluster, checked from outside
# through `kubectl port-forward` (no image can be pulled for an in-cluster curl).
e2e() {
  exists || die "no kind cluster $CLUSTER: hack/kind.sh up"
  local port=${KEA_E2E_PORT:-28080} pf answer
  command -v jq >/dev/null || die "jq is needed"
  timed "operator running" deploy_operator "$WAIT"
  timed "Microservices Ready" deploy_examples "$WAIT"
  kubectl get microservices -n kea-demo >&2
  ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port " && die "port $port is taken: set KEA_E2E_PORT"
  kubectl -n kea-demo port-forward --address 127.0.0.1 svc/frontend "$port:8080" >/dev/null 2>&1 &
  pf=$!
  # shellcheck disable=SC2064 # expand now
  trap "kill $pf 2>/dev/null || true" EXIT
  retry 10 curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 || true
  answer=$(curl -fsS "http://127.0.0.1:$port/") || die "GET / failed"
  log "GET / -> $answer"
  [ "$answer" = "Hello KEA!" ] || die "unexpected answer to GET /"
  answer=$(curl -fsS "http://127.0.0.1:$port/api/dependencies") || die "GET /api/dependencies failed"
  log "GET /api/dependencies -> $(jq -c '[.dependencies[] | {name, up, status}]' <<<"$answer")"
  [ "$(jq '[.dependencies[] | select(.up)] | length' <<<"$answer")" = 2 ] ||
    die "users and orders are not both up"
  log "e2e passed"
}

status() {
  exists || { echo "no kind cluster $CLUSTER"; return 1; }
  kubectl get nodes -o wide
  kubectl get pods -A
}

case "${1:-}" in
  up) timed "kind cluster $CLUSTER up" up ;;
  down) down ;;
  load) shift; load "$@" ;;
  e2e) timed "kind cluster $CLUSTER e2e" e2e ;;
  status) status ;;
  prune) prune ;;
  *) die "usage: $0 up|down|load|e2e|status|prune" ;;
esac
