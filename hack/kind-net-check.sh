#!/usr/bin/env bash
# Checks the pod network, NetworkPolicy and metrics of a kind cluster made by
# hack/kind.sh up (kube-router + metrics-server), in a throwaway namespace:
#
#   hack/kind-net-check.sh        # uses $KUBECONFIG (default: hack/kind.sh's kubeconfig)
#
#   1. the nodes are Ready (at least KEA_NETCHECK_NODES, default 3);
#   2. kea-service pods on different nodes answer busybox clients by pod IP (same node and
#      across nodes), through the ClusterIP Service and its DNS name;
#   3. a NetworkPolicy admitting only pods labelled access=allowed: an unlabelled client is
#      refused, a labelled one gets through, and adding/removing the label flips it
#      (the time each flip takes is printed);
#   4. under a deny-all-ingress policy the kubelet's HTTP probes still pass (a rollout
#      becomes Ready, no restarts) while clients are refused;
#   5. `kubectl top nodes/pods` show values and an HPA on the Deployment shows a CPU
#      percentage.
# Every wait is bounded. Needs kea.dev/kea-service:dev loaded into the cluster (hack/kind.sh
# load) and the preloaded kea.dev/local-path-helper:busybox-bookworm (busybox with wget).
# The namespace is deleted at the end (KEA_NETCHECK_KEEP=1 keeps it).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
toolchain_path

export KUBECONFIG=${KUBECONFIG:-${KEA_KIND_KUBECONFIG:-$KEA_CACHE_DIR/kind/kubeconfig}}
NS=${KEA_NETCHECK_NAMESPACE:-kea-netcheck}
NODES=${KEA_NETCHECK_NODES:-3}
SERVICE_IMAGE=kea.dev/kea-service:${KEA_IMAGE_TAG:-dev}
CLIENT_IMAGE=kea.dev/local-path-helper:busybox-bookworm
require_cmd kubectl "build it with hack/toolchain.sh kind"

failures=0
pass() { log "PASS $*"; }
fail() { log "FAIL $*"; failures=$((failures + 1)); }
now_ms() { date +%s%3N; }

cleanup() {
  [ "${KEA_NETCHECK_KEEP:-0}" = 1 ] || kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# get FROM URL: one HTTP GET from a client pod, 2 s timeout; prints the body. (Not
# `wget -T`: Debian bookworm's busybox-static 1.35 wget segfaults with it.)
get() { kubectl -n "$NS" exec "$1" -- timeout 2 wget -q -O - "$2" 2>/dev/null; }
# reaches FROM URL: 0 if GET / answers "Hello KEA!".
reaches() { [ "$(get "$1" "$2")" = "Hello KEA!" ]; }
# until_state FROM URL yes|no LIMIT_S: polls (each try at most ~2 s) until the client
# reaches (yes) or is refused (no); prints the milliseconds it took, fails after LIMIT_S.
until_state() {
  local from=$1 url=$2 want=$3 limit=$4 start got
  start=$(now_ms)
  while [ $(($(now_ms) - start)) -lt $((limit * 1000)) ]; do
    if reaches "$from" "$url"; then got=yes; else got=no; fi
    if [ "$got" = "$want" ]; then echo $(($(now_ms) - start)); return 0; fi
    sleep 0.2
  done
  return 1
}

log "== 1. nodes"
ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)
kubectl get nodes -o wide >&2
if [ "$ready" -ge "$NODES" ]; then pass "$ready nodes Ready"; else fail "$ready nodes Ready, expected $NODES"; fi

log "== 2. pods across nodes, by pod IP and through the Service"
kubectl create namespace "$NS" >/dev/null 2>&1 || true
kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # one per schedulable node: traffic between the clients and them crosses nodes
      # (Honor: the tainted control-plane node is no domain of the spread)
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
           nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
      containers:
        - name: web
          image: $SERVICE_IMAGE
          imagePullPolicy: IfNotPresent
          env: [{name: KEA_DATA_DIR, value: /data}, {name: KEA_SHUTDOWN_DELAY, value: 0s}]
          ports: [{containerPort: 8080, name: http}]
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 2}
          livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2, failureThreshold: 3}
          resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-allowed, labels: {access: allowed}}
spec:
  containers: [{name: c, image: $CLIENT_IMAGE, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
  terminationGracePeriodSeconds: 0
---
apiVersion: v1
kind: Pod
metadata: {name: client-other}
spec:
  containers: [{name: c, image: $CLIENT_IMAGE, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
  terminationGracePeriodSeconds: 0
EOF
kubectl -n "$NS" rollout status deployment/web --timeout=180s >/dev/null || fail "web not rolled out"
kubectl -n "$NS" wait --for=condition=Ready pod/client-allowed pod/client-other --timeout=120s >/dev/null ||
  fail "clients not Ready"
kubectl -n "$NS" get pods -o wide >&2
mapfile -t web_pods < <(kubectl -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}')
for client in client-allowed client-other; do
  client_node=$(kubectl -n "$NS" get pod "$client" -o jsonpath='{.spec.nodeName}')
  for line in "${web_pods[@]}"; do
    read -r pod ip node <<<"$line"
    where=$([ "$node" = "$client_node" ] && echo "same node" || echo "across nodes")
    if reaches "$client" "http://$ip:8080/"; then pass "$client ($client_node) -> $pod $ip ($node, $where)"
    else fail "$client ($client_node) -> $pod $ip ($node, $where)"; fi
  done
done
cluster_ip=$(kubectl -n "$NS" get service web -o jsonpath='{.spec.clusterIP}')
for url in "http://$cluster_ip:8080/" "http://web.$NS.svc.cluster.local:8080/"; do
  ok=0
  for _ in 1 2 3 4 5 6; do reaches client-other "$url" && ok=$((ok + 1)); done
  if [ $ok = 6 ]; then pass "client-other -> Service $url (6/6)"; else fail "client-other -> Service $url ($ok/6)"; fi
done

# Applies the ingress NetworkPolicy NAME whose spec (indented two spaces) comes on stdin.
ingress_policy() {
  { printf 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s}\nspec:\n  policyTypes: [Ingress]\n' "$1"
    cat; } | kubectl apply -n "$NS" -f - >/dev/null
}

log "== 3. NetworkPolicy: ingress to app=web only from pods labelled access=allowed"
ingress_policy web-allow-labelled <<EOF
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {access: allowed}}}]
      ports: [{port: 8080, protocol: TCP}]
EOF
svc="http://$cluster_ip:8080/"
if ms=$(until_state client-other "$svc" no 30); then pass "policy applied: client-other refused after ${ms} ms"
else fail "client-other still reaches web 30 s after the policy"; fi
if reaches client-allowed "$svc"; then pass "client-allowed (labelled) reaches web"; else fail "client-allowed refused"; fi
for line in "${web_pods[@]}"; do
  read -r pod ip node <<<"$line"
  if reaches client-other "http://$ip:8080/"; then fail "client-other reaches $pod by pod IP"
  else pass "client-other refused by pod IP $ip ($node)"; fi
done
kubectl -n "$NS" label pod client-other access=allowed >/dev/null
if ms=$(until_state client-other "$svc" yes 30); then pass "label added: client-other gets through after ${ms} ms"
else fail "client-other still refused 30 s after its label was added"; fi
kubectl -n "$NS" label pod client-allowed access- >/dev/null
if ms=$(until_state client-allowed "$svc" no 30); then pass "label removed: client-allowed refused after ${ms} ms"
else fail "client-allowed still gets through 30 s after its label was removed"; fi
kubectl -n "$NS" label pod client-allowed access=allowed >/dev/null
if ms=$(until_state client-allowed "$svc" yes 30); then pass "label back: client-allowed gets through after ${ms} ms"
else fail "client-allowed still refused 30 s after its label came back"; fi

log "== 4. deny-all ingress: clients refused, the kubelet's probes still pass"
ingress_policy deny-all-ingress <<EOF
  podSelector: {}
EOF
kubectl -n "$NS" delete networkpolicy web-allow-labelled >/dev/null
if ms=$(until_state client-allowed "$svc" no 30); then pass "deny-all: client-allowed refused after ${ms} ms"
else fail "deny-all: client-allowed still gets through"; fi
restarts_before=$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{" "}{end}')
start=$SECONDS
kubectl -n "$NS" rollout restart deployment/web >/dev/null
if kubectl -n "$NS" rollout status deployment/web --timeout=120s >/dev/null; then
  pass "deny-all: a rollout of web became Ready through its readiness probes in $((SECONDS - start)) s"
else fail "deny-all: the rollout of web did not become Ready (probes blocked?)"; fi
sleep 10 # several liveness periods (2 s, 3 failures) under the policy
restarts=$(kubectl -n "$NS" get pods -l app=web -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{" "}{end}')
if [ -z "$(tr -d '0 ' <<<"$restarts")" ]; then pass "deny-all: no liveness restarts (restart counts: $restarts; before the rollout: $restarts_before)"
else fail "deny-all: restarts $restarts"; fi
kubectl -n "$NS" get pods -l app=web -o wide >&2
kubectl -n "$NS" delete networkpolicy deny-all-ingress >/dev/null

log "== 5. metrics: kubectl top, HPA"
kubectl -n "$NS" autoscale deployment web --cpu=50% --min=2 --max=4 >/dev/null
start=$SECONDS got=
while [ $((SECONDS - start)) -lt 120 ]; do
  got=$(kubectl top nodes --no-headers 2>/dev/null | wc -l)
  [ "$got" -ge "$NODES" ] && break
  sleep 3
done
if [ "${got:-0}" -ge "$NODES" ]; then pass "kubectl top nodes after $((SECONDS - start)) s"; kubectl top nodes >&2
else fail "kubectl top nodes shows no values after 120 s"; fi
start=$SECONDS got=
while [ $((SECONDS - start)) -lt 120 ]; do
  got=$(kubectl -n "$NS" top pods --no-headers 2>/dev/null | wc -l)
  [ "$got" -ge 2 ] && break
  sleep 3
done
if [ "${got:-0}" -ge 2 ]; then pass "kubectl top pods after $((SECONDS - start)) s"; kubectl -n "$NS" top pods >&2
else fail "kubectl top pods shows no values after 120 s"; fi
start=$SECONDS target=
while [ $((SECONDS - start)) -lt 180 ]; do
  target=$(kubectl -n "$NS" get hpa web -o jsonpath='{.status.currentMetrics[0].resource.current.averageUtilization}' 2>/dev/null)
  [ -n "$target" ] && break
  sleep 5
done
kubectl -n "$NS" get hpa web >&2
if [ -n "$target" ]; then pass "HPA web shows CPU ${target}% (target 50%) after $((SECONDS - start)) s"
else fail "HPA web shows no CPU value after 180 s"; fi

if [ "$failures" -eq 0 ]; then log "all checks passed"; else log "$failures check(s) failed"; exit 1; fi
