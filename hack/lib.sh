# shellcheck shell=bash
# Shared helpers for the hack/ scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

# The toolchain cache lives outside the checkout so fresh clones reuse it.
KEA_CACHE_DIR=${KEA_CACHE_DIR:-$HOME/.cache/kea}
TOOLCHAIN_DIR="$KEA_CACHE_DIR/toolchain"
# Where the local control plane keeps its state, certificates and logs.
KEA_RUN_DIR=${KEA_RUN_DIR:-$KEA_CACHE_DIR/run}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# tool_bin NAME VERSION: the cached path of a built binary.
tool_bin() { echo "$TOOLCHAIN_DIR/$1-$2/$1"; }

# Put every built tool on PATH (cached binaries only; nothing is built here).
toolchain_path() {
  local d
  for d in "$TOOLCHAIN_DIR"/*/; do
    [ -d "$d" ] && PATH="${d%/}:$PATH"
  done
  export PATH
}

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# apt_install PACKAGE...: installs Debian packages that are missing (updates the lists once).
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps packaged servers from starting system-wide.
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# kind_kubeconfig CLUSTER: where hack/kind.sh keeps the kubeconfig of a kind cluster: the
# demo's cluster "kea" in $KEA_CACHE_DIR/kind/kubeconfig, any other next to it.
kind_kubeconfig() {
  if [ "$1" = kea ]; then echo "$KEA_CACHE_DIR/kind/kubeconfig"; else echo "$KEA_CACHE_DIR/kind/kubeconfig-$1"; fi
}

# process_running PID: whether PID is a live process (a zombie, killed but not yet reaped by
# its parent, counts as gone).
process_running() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# stop_processes GRACE_SECONDS PID...: SIGTERM each process, SIGKILL those still running
# after the grace period; fails, naming them, if any survives that.
stop_processes() {
  local grace=$1 pid alive=() i
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i <= grace * 10 + 20; i++)); do
    alive=()
    for pid in "$@"; do process_running "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    if [ "$i" -eq $((grace * 10)) ]; then
      log "still running ${grace}s after SIGTERM, killing: ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    sleep 0.1
  done
  log "error: still running after SIGKILL: ${alive[*]}"
  return 1
}

# Every example Microservice of deploy/examples/.
EXAMPLE_MICROSERVICES=(users orders frontend)

# wait_operator NAMESPACE TIMEOUT: waits until the Microservice CRD is served and the
# operator's Deployment in NAMESPACE has rolled out.
wait_operator() {
  kubectl wait --for=condition=Established crd/microservices.kea.dev --timeout=60s >/dev/null ||
    die "the Microservice CRD is not served: kubectl get crd microservices.kea.dev -o yaml"
  kubectl -n "$1" rollout status deployment/kea-operator --timeout="$2" >/dev/null ||
    die "the operator did not roll out: kubectl -n $1 describe deployment kea-operator"
}

# deploy_operator TIMEOUT: kubectl apply -f deploy/ (CRD, namespace, RBAC, operator), then
# waits until the operator runs.
deploy_operator() {
  log "installing the operator (kubectl apply -f deploy/)"
  kubectl apply -f "$REPO_ROOT/deploy/" >/dev/null || die "kubectl apply -f deploy/ failed"
  wait_operator kea-system "$1"
}

# deploy_examples TIMEOUT: applies deploy/examples/ and waits until each example is Ready
# and its Deployment rolled out.
deploy_examples() {
  local ms
  log "applying the example system (deploy/examples/)"
  kubectl apply -f "$REPO_ROOT/deploy/examples/" >/dev/null || die "kubectl apply -f deploy/examples/ failed"
  for ms in "${EXAMPLE_MICROSERVICES[@]}"; do
    kubectl -n kea-demo wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].status}'=True \
      "microservice/$ms" --timeout="$1" >/dev/null ||
      die "Microservice $ms is not Ready: kubectl -n kea-demo describe ms $ms"
    kubectl -n kea-demo rollout status "deployment/$ms" --timeout="$1" >/dev/null ||
      die "Deployment $ms did not roll out: kubectl -n kea-demo describe deployment $ms"
  done
}
