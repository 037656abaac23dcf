#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for the integration tests, as host
# processes: etcd, kube-apiserver, kube-controller-manager (garbage collector,
# Deployment/ReplicaSet, ServiceAccount, namespace controllers...), kube-scheduler,
# and kwok, which fakes one node and makes its Pods Running and Ready without
# containers. The same tier controller-runtime's envtest gives, plus the controllers.
#
#   hack/control-plane.sh up       # start (idempotent) and wait until usable
#   hack/control-plane.sh down     # stop everything it started, remove its state
#   hack/control-plane.sh status   # what runs, and whether the API answers
#   hack/control-plane.sh env      # eval "$(hack/control-plane.sh env)" for kubectl
#
# Binaries come from hack/toolchain.sh (versions in hack/versions.env). State,
# certificates and logs live in $KEA_RUN_DIR/control-plane, the kubeconfig in
# $KEA_RUN_DIR/kubeconfig ($KEA_RUN_DIR: ~/.cache/kea/run, shared with other services).
# Ports are chosen to stay clear of a real cluster's and can be changed:
#   KEA_ETCD_PORT, KEA_ETCD_PEER_PORT, KEA_APISERVER_PORT, KEA_CONTROLLER_MANAGER_PORT,
#   KEA_SCHEDULER_PORT, KEA_KWOK_PORT.
# The controller-manager and the scheduler talk to the API server at KEA_CONTROL_PLANE_QPS
# requests per second (burst twice that; default 200, Kubernetes' own default is 20), so
# that at scale (bench/operator.sh) the operator, not the built-in controllers' client rate
# limit, is what is measured.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ETCD_PORT=${KEA_ETCD_PORT:-12379}
ETCD_PEER_PORT=${KEA_ETCD_PEER_PORT:-12380}
APISERVER_PORT=${KEA_APISERVER_PORT:-16443}
CONTROLLER_MANAGER_PORT=${KEA_CONTROLLER_MANAGER_PORT:-10357}
SCHEDULER_PORT=${KEA_SCHEDULER_PORT:-10359}
KWOK_PORT=${KEA_KWOK_PORT:-10347}
# Only a range for ClusterIPs to be allocated from: nothing routes traffic there.
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
NODE_NAME=kwok-node-0
UP_TIMEOUT=${KEA_CONTROL_PLANE_TIMEOUT:-120}
CLIENT_QPS=${KEA_CONTROL_PLANE_QPS:-200}
[[ $CLIENT_QPS =~ ^[1-9][0-9]*$ ]] || die "KEA_CONTROL_PLANE_QPS must be a positive integer, got '$CLIENT_QPS'"

STATE_DIR="$KEA_RUN_DIR/control-plane"
PKI="$STATE_DIR/pki"
LOGS="$STATE_DIR/logs"
PIDS="$STATE_DIR/pids"
KUBECONFIG_FILE="$KEA_RUN_DIR/kubeconfig"
# Marks a directory as ours, so that only such a directory is ever removed.
MARKER=.kea-control-plane
# Start order; stopped in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

require_binaries() {
  local missing
  missing=$("$HACK_DIR/toolchain.sh" missing control-plane | cut -d' ' -f1 | xargs)
  [ -z "$missing" ] || die "missing $missing in $TOOLCHAIN_DIR: run hack/toolchain.sh control-plane"
}

kubectl_() { "$(tool_bin kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# pid_of NAME: the recorded pid, if that process still runs the component's binary.
pid_of() { pid_in_file "$PIDS/$1.pid" "$(tool_bin "$1")"; }

running() { pid_of "$1" >/dev/null; }

# Processes running one of our binaries with our state dir on their command line.
strays() {
  local name bins=()
  for name in "${COMPONENTS[@]}"; do bins+=("$(tool_bin "$name")"); done
  processes_using "$STATE_DIR" "${bins[@]}"
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

check_ports() {
  local var port
  for var in ETCD_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT KWOK_PORT; do
    port=${!var}
    port_free "$port" || die "port $port is in use: set KEA_$var to a free port"
  done
}

# remove_state: delete our state dir (only if this script made it) and kubeconfig.
remove_state() {
  if [ -e "$STATE_DIR" ]; then
    [ -f "$STATE_DIR/$MARKER" ] || [ -z "$(ls -A "$STATE_DIR")" ] ||
      die "$STATE_DIR exists but was not made by this script: not removing it"
    rm -rf "$STATE_DIR"
  fi
  rm -f "$KUBECONFIG_FILE"
  rmdir "$KEA_RUN_DIR" 2>/dev/null || true
}

# --- certificates -----------------------------------------------------------------

# sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the CA.
sign() {
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "$2" \
    -out "$PKI/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}

generate_pki() {
  require_cmd openssl "apt-get install -y openssl"
  mkdir -p "$PKI" && chmod 700 "$PKI"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -days 3650 -sha256 \
    -subj "/CN=kea-control-plane-ca" -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # Served by kube-apiserver (and kwok's kubelet API); the in-cluster names are there
  # for clients that verify them, though no traffic goes to the service IP.
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # system:masters: the tests, kubectl and the components (controller-manager with
  # --use-service-account-credentials=false needs every controller's rights).
  sign admin "/O=system:masters/CN=kea-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Signs and verifies ServiceAccount tokens.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

write_kubeconfig() {
  local b64='base64 -w0'
  cat >"$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kea
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: kea-admin
  user:
    client-certificate-data: $($b64 <"$PKI/admin.crt")
    client-key-data: $($b64 <"$PKI/admin.key")
contexts:
- name: kea
  context: {cluster: kea, user: kea-admin}
current-context: kea
EOF
  chmod 600 "$KUBECONFIG_FILE.tmp"
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

# --- processes --------------------------------------------------------------------

# start NAME ARGS...: run the component in its own session (so it outlives this
# script and a Ctrl-C in the terminal), logging to $LOGS/NAME.log. The child writes
# its own pid before exec'ing, so the pid file is right even if setsid forks.
start() {
  local name=$1
  shift
  log "starting $name"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDS/$name.pid" "$(tool_bin "$name")" "$@" \
    </dev/null >"$LOGS/$name.log" 2>&1 &
  retry 5 started_or_died "$name" || true
  running "$name" || fail_start "$name"
}

started_or_died() { running "$1" || { [ -s "$PIDS/$1.pid" ] && ! pid_in_file "$PIDS/$1.pid" >/dev/null; }; }

fail_start() {
  log "$1 did not start or died; last lines of $LOGS/$1.log:"
  tail -n 20 "$LOGS/$1.log" >&2 || true
  stop_all
  die "$1 failed (logs kept in $LOGS until the next 'up')"
}

# wait_until DESCRIPTION COMMAND...: retry COMMAND until it succeeds or time is up;
# any component dying meanwhile fails at once with its log.
wait_until() {
  local what=$1
  shift
  retry "$UP_TIMEOUT" alive_and "$@" ||
    { stop_all; die "timed out after ${UP_TIMEOUT}s waiting for $what (logs: $LOGS)"; }
}

alive_and() {
  local name
  for name in "${COMPONENTS[@]}"; do
    if [ -f "$PIDS/$name.pid" ] && ! running "$name"; then fail_start "$name"; fi
  done
  "$@" >/dev/null 2>&1
}

https_ok() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$1"
}

start_etcd() {
  # No fsync: a throwaway store for tests, and much faster on slow disks.
  start etcd --name kea --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kea=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_until "etcd" curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  # --endpoint-reconciler-type=none: the `kubernetes` Service's endpoints would be
  # 127.0.0.1, which the API rejects; nothing in the tests reaches the API through it.
  # NodeRestriction comes on top of the default admission plugins, as in kubeadm.
  start kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --cert-dir "$STATE_DIR/apiserver" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling=false
  wait_until "kube-apiserver /readyz" https_ok "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controller_manager() {
  # The CA signs CSRs and is published in every namespace (kube-root-ca.crt); the
  # ServiceAccount key lets the token controller sign legacy tokens.
  start kube-controller-manager \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --cert-dir "$STATE_DIR/controller-manager" \
    --controllers '*' \
    --use-service-account-credentials=false \
    --root-ca-file "$PKI/ca.crt" \
    --service-account-private-key-file "$PKI/sa.key" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --kube-api-qps "$CLIENT_QPS" --kube-api-burst $((2 * CLIENT_QPS)) \
    --leader-elect=false \
    --profiling=false
}

start_scheduler() {
  start kube-scheduler \
    --kubeconfig "$KUBECONFIG_FILE" \
    --authentication-kubeconfig "$KUBECONFIG_FILE" --authorization-kubeconfig "$KUBECONFIG_FILE" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --cert-dir "$STATE_DIR/scheduler" \
    --kube-api-qps "$CLIENT_QPS" --kube-api-burst $((2 * CLIENT_QPS)) \
    --leader-elect=false \
    --profiling=false
}

start_kwok() {
  # With no Stage configuration kwok uses its built-in default stages (node
  # initialize + heartbeat, pod ready/complete/delete): Pods on its nodes become
  # Running and Ready at once. KWOK_WORKDIR keeps a ~/.kwok/kwok.yaml out of the run.
  mkdir -p "$STATE_DIR/kwok"
  KWOK_WORKDIR="$STATE_DIR/kwok" start kwok \
    --kubeconfig "$KUBECONFIG_FILE" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --cidr 10.244.0.1/24 \
    --node-lease-duration-seconds 40 \
    --server-address "127.0.0.1:$KWOK_PORT" --node-port "$KWOK_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key"
}

create_node() {
  # No taint: the operator's Pods must schedule here without special tolerations.
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
}

node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

healthy() { curl -skf --max-time 2 "https://127.0.0.1:$1/healthz"; }

all_running() {
  local name
  for name in "${COMPONENTS[@]}"; do running "$name" || return 1; done
}

any_running() {
  local name
  for name in "${COMPONENTS[@]}"; do running "$name" && return 0; done
  [ -n "$(strays)" ]
}

up() {
  require_binaries
  if all_running && https_ok "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null; then
    log "control plane already up (kubeconfig: $KUBECONFIG_FILE)"
    return 0
  fi
  if any_running; then
    log "control plane partly running: restarting it"
    stop_all
  fi
  require_cmd curl "apt-get install -y curl"
  require_cmd ss "apt-get install -y iproute2"
  check_ports
  local start=$EPOCHREALTIME
  remove_state
  mkdir -p "$LOGS" "$PIDS"
  touch "$STATE_DIR/$MARKER"
  generate_pki
  write_kubeconfig
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_kwok
  wait_until "the node $NODE_NAME to be created" create_node
  wait_until "kube-controller-manager /healthz" healthy "$CONTROLLER_MANAGER_PORT"
  wait_until "kube-scheduler /healthz" healthy "$SCHEDULER_PORT"
  wait_until "the node $NODE_NAME to be Ready (kwok)" node_ready
  wait_until "the default ServiceAccount (controller-manager)" kubectl_ -n default get serviceaccount default
  log "control plane up in $(seconds_since "$start"): Kubernetes $KUBERNETES_VERSION, https://127.0.0.1:$APISERVER_PORT"
  log "kubeconfig: $KUBECONFIG_FILE (eval \"\$(hack/control-plane.sh env)\")"
}

# stop_all: TERM every component (newest first), KILL what is left after 10s, then
# check that none of our processes survived. Keeps the state dir (logs) for diagnosis.
stop_all() {
  local name pid pids=() i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    if pid=$(pid_of "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  # Strays are looked for after the TERMs above, so skip those still shutting down.
  for pid in $(strays); do
    [[ " ${pids[*]} " == *" $pid "* ]] && continue
    log "stopping stray process $pid ($(command_line "$pid"))"
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  stop_processes 10 "${pids[@]}" || die "control plane processes survived SIGKILL"
  [ -z "$(strays)" ] || die "control plane processes are still running: $(strays | tr '\n' ' ')"
  rm -f "$PIDS"/*.pid
}

down() {
  if [ -d "$STATE_DIR" ] || [ -n "$(strays)" ]; then
    stop_all
    remove_state
    log "control plane stopped; $STATE_DIR removed"
  else
    log "control plane not running"
  fi
}

status() {
  local name pid rc=0
  for name in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$name"); then
      printf '%-24s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-24s stopped\n' "$name"
      rc=1
    fi
  done
  if [ -f "$PKI/ca.crt" ] && https_ok "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null; then
    printf '%-24s https://127.0.0.1:%s ready\n' api "$APISERVER_PORT"
    printf '%-24s %s\n' kubeconfig "$KUBECONFIG_FILE"
  else
    printf '%-24s not answering\n' api
    rc=1
  fi
  return $rc
}

env_() {
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  echo "export KEA_KUBECONFIG=$KUBECONFIG_FILE"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_ ;;
  *) die "usage: $0 up|down|status|env" ;;
esac
