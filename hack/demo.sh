#!/usr/bin/env bash
# Brings the whole system up on this machine and shows it working, with no registry:
#   1. a Docker engine (hack/docker.sh) and the Kubernetes toolchain, built from the Go
#      module proxy on first use and cached (hack/toolchain.sh);
#   2. the images of kea-service and kea-operator (hack/images.sh);
#   3. a kind cluster from a node image assembled offline (hack/kind.sh up);
#   4. the operator (kubectl apply -f deploy/) and the example system of deploy/examples
#      (users, orders, frontend), reconciled until Ready, pods Ready through their probes.
# It ends by printing the Microservices with their URLs and the answers of the seed's
# routes, served by the frontend pods through a port-forward, and leaves it all running.
#
#   hack/demo.sh [up|down]
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export KUBECONFIG=${KEA_KIND_KUBECONFIG:-$(kind_kubeconfig kea)}
DEMO_DIR="$KEA_RUN_DIR/demo"
PORT=${KEA_DEMO_PORT:-28081}

# Stops the port-forward of an earlier run, if it still runs (its pid file may be stale).
stop_port_forward() {
  local pid
  if pid=$(pid_in_file "$DEMO_DIR/port-forward.pid" kubectl); then kill "$pid" 2>/dev/null || true; fi
  rm -f "$DEMO_DIR/port-forward.pid"
}

down() {
  stop_port_forward
  rm -rf "$DEMO_DIR"
  "$HACK_DIR/kind.sh" down
  log "demo stopped (hack/docker.sh stop stops the Docker engine)"
}

up() {
  local start=$SECONDS route
  mkdir -p "$DEMO_DIR"
  "$HACK_DIR/docker.sh" start
  "$HACK_DIR/toolchain.sh" kind
  "$HACK_DIR/toolchain.sh" control-plane
  toolchain_path
  # Before the long image build: a cluster left from before a restart only burns CPU.
  "$HACK_DIR/kind.sh" prune
  "$HACK_DIR/images.sh"
  "$HACK_DIR/kind.sh" up

  deploy_operator 300s
  deploy_examples 300s

  stop_port_forward
  kubectl -n kea-demo port-forward --address 127.0.0.1 svc/frontend "$PORT:8080" \
    >"$DEMO_DIR/port-forward.log" 2>&1 &
  echo $! >"$DEMO_DIR/port-forward.pid"
  retry 10 curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 || true

  echo
  echo "The example system on kind, up in $((SECONDS - start))s:"
  kubectl get microservices -n kea-demo
  echo
  echo "The frontend Service (kubectl port-forward to 127.0.0.1:$PORT) answers the seed's routes:"
  for route in / /oscheck /mysqldata /nosqldata; do
    printf '  GET %-17s -> %s\n' "$route" "$(curl -sS "http://127.0.0.1:$PORT$route")"
  done
  printf '  GET %-17s -> %s\n' /api/dependencies "$(curl -sS "http://127.0.0.1:$PORT/api/dependencies" \
    | python3 -c '
import json, sys
deps = json.load(sys.stdin)["dependencies"]
print(", ".join("%s: %s (%s)" % (d["name"], "up" if d["up"] else "down", d["url"]) for d in deps))')"
  echo
  echo "kubectl:  export KUBECONFIG=$KUBECONFIG"
  echo "stop:     hack/demo.sh down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 [up|down]" ;;
esac
