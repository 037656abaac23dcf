#!/usr/bin/env bash
# Brings up the whole system on this machine and shows it working:
#   1. the Kubernetes toolchain (built from the Go module proxy on first use, then cached);
#   2. a real control plane (hack/control-plane.sh: etcd, kube-apiserver,
#      controller-manager, scheduler, and kwok, whose fake node runs no containers);
#   3. the CRD and the kea-operator (a host process), then the example system of
#      deploy/examples (users, orders, frontend) reconciled until Ready;
#   4. the reference microservice itself (kea-service, embedded stores), answering
#      the seed's routes.
# It ends by printing the Microservices with their URLs and the seed routes' answers,
# and leaves everything running; `hack/demo.sh down` stops it all.
#
#   hack/demo.sh [up|down]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

DEMO_DIR="$KEA_RUN_DIR/demo"
SERVICE_ADDR=${KEA_DEMO_SERVICE_ADDR:-127.0.0.1:18080}
OPERATOR_HTTP_ADDR=${KEA_DEMO_OPERATOR_ADDR:-127.0.0.1:18081}

stop_pid() {
  local pidfile=$1
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
}

down() {
  stop_pid "$DEMO_DIR/operator.pid"
  stop_pid "$DEMO_DIR/service.pid"
  "$HACK_DIR/control-plane.sh" down
  rm -rf "$DEMO_DIR"
  log "demo stopped"
}

up() {
  mkdir -p "$DEMO_DIR"
  "$HACK_DIR/toolchain.sh" control-plane
  "$HACK_DIR/control-plane.sh" up
  eval "$("$HACK_DIR/control-plane.sh" env)"
  toolchain_path

  log "building kea-operator and kea-service"
  cargo build -q --release -p kea-operator -p kea-service --bins
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

  log "installing the Microservice CRD"
  kubectl apply --server-side -f deploy/00-crd.yaml >/dev/null
  kubectl wait --for condition=established --timeout=60s crd/microservices.kea.dev >/dev/null

  if [ ! -f "$DEMO_DIR/operator.pid" ] || ! kill -0 "$(cat "$DEMO_DIR/operator.pid")" 2>/dev/null; then
    log "starting kea-operator (logs: $DEMO_DIR/operator.log)"
    KEA_HTTP_ADDR=$OPERATOR_HTTP_ADDR "$target_dir/release/kea-operator" run --leader-elect=false \
      >"$DEMO_DIR/operator.log" 2>&1 &
    echo $! >"$DEMO_DIR/operator.pid"
  fi

  log "applying the example system (deploy/examples)"
  kubectl apply -f deploy/examples/ >/dev/null
  kubectl -n kea-demo wait --for condition=Ready --timeout=120s microservice --all >/dev/null \
    || die "the examples did not become Ready: kubectl -n kea-demo describe ms; $DEMO_DIR/operator.log"

  if [ ! -f "$DEMO_DIR/service.pid" ] || ! kill -0 "$(cat "$DEMO_DIR/service.pid")" 2>/dev/null; then
    log "starting kea-service on $SERVICE_ADDR (data: $DEMO_DIR/data)"
    KEA_LISTEN=$SERVICE_ADDR KEA_DATA_DIR="$DEMO_DIR/data" "$target_dir/release/kea-service" \
      >"$DEMO_DIR/service.log" 2>&1 &
    echo $! >"$DEMO_DIR/service.pid"
  fi
  local i
  for i in $(seq 1 50); do curl -fsS "http://$SERVICE_ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

  echo
  echo "Microservices in kea-demo (reconciled by kea-operator; kwok's node runs no containers):"
  kubectl -n kea-demo get microservices
  echo
  echo "kea-service at http://$SERVICE_ADDR answers the seed's routes:"
  local route
  for route in / /oscheck /mysqldata /nosqldata; do
    printf '  GET %-11s -> %s\n' "$route" "$(curl -sS "http://$SERVICE_ADDR$route")"
  done
  echo
  echo "kubectl:  eval \"\$(hack/control-plane.sh env)\"; kubectl -n kea-demo get ms,deploy,svc"
  echo "stop:     hack/demo.sh down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 [up|down]" ;;
esac
