#!/usr/bin/env bash
# Benchmarks kea-operator at scale on the real control plane (hack/control-plane.sh), in
# one run, and prints a table:
#   - operator arm: N Microservices applied at once in a fresh namespace, watched by a
#     release build of the operator run as a host process. Its own speed: seconds until
#     every Microservice's children exist (the newest child's creationTimestamp), reconciles
#     per second, p50/p99 reconcile latency (from its histogram), and the API server's GETs
#     on the children's kinds while it worked (reads come from its caches). End to end:
#     seconds until every Microservice reports Ready=True (followed by a watch, not polled).
#     Its peak RSS (VmHWM) and CPU seconds. At steady state (10 s after all are Ready, over
#     a 30 s window) the writes it makes: its own counter, the objects whose kea-operator
#     managedFields entry changed in the window, and the API server's mutating requests
#     (apiserver_request_total).
#   - direct arm (the ceiling): the same children (Deployments, Services, NetworkPolicies,
#     rendered by `kea-operator render`) applied straight to another namespace by as many
#     concurrent `kubectl apply --server-side` clients as the operator runs reconciles at
#     once; seconds until applied, and until every Deployment is Available. It runs once
#     before and once after the operator arm, and the ratios take the mean of the two; a
#     smaller direct run before all, not measured, warms the control plane up.
#   - in each arm, until all are Ready: the CPU seconds of kube-apiserver and of the whole
#     control plane (its processes on this host: API server, etcd, controller-manager,
#     scheduler, kwok). On 2 cores it is busy throughout, and the arms' times follow.
# Targets at N=1000: children applied within 1.5x of the direct apply; end-to-end ratio
# <= 1.2; peak RSS under 30 MiB; no writes at steady state. The control plane's own
# controllers run with a raised client rate limit (KEA_CONTROL_PLANE_QPS, see
# hack/control-plane.sh), so they are not what is measured.
#
#   bench/operator.sh [N]     # N defaults to 1000
#
# Environment: KEA_CONCURRENCY (the operator's concurrent reconciles and the direct arm's
# clients, default 4), KEA_BENCH_TIMEOUT (seconds per arm to wait for readiness, default
# 1800), KEA_BENCH_SETTLE and KEA_BENCH_WINDOW (seconds after all are Ready before the
# steady-state window, and its length: 10 and 30).
# Pods run on the kwok node(s): the first kwok node's status capacity and allocatable get 2N
# more pod slots and ample CPU and memory for the run, restored on exit. The CRD is
# installed (server-side apply) and left installed.
# If the control plane is down, it is started and stopped again on exit.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT" || exit 1
toolchain_path

N=${1:-1000}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "usage: bench/operator.sh [N] (N a positive integer, got '$N')"
TIMEOUT=${KEA_BENCH_TIMEOUT:-1800}
CONCURRENCY=${KEA_CONCURRENCY:-4}
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "KEA_CONCURRENCY must be a positive integer"
APPLIERS=$CONCURRENCY
SETTLE=${KEA_BENCH_SETTLE:-10}
WINDOW=${KEA_BENCH_WINDOW:-30}
IMAGE=registry.example/kea-service:0.1.0
OPERATOR_KINDS="deployments services microservices poddisruptionbudgets horizontalpodautoscalers events"
CHILD_KINDS="deployments services networkpolicies poddisruptionbudgets horizontalpodautoscalers statefulsets"

require_cmd kubectl "run hack/toolchain.sh control-plane"
require_cmd curl "apt-get install -y curl"
require_cmd python3 "apt-get install -y python3"

RUN_ID=$(date +%H%M%S)-$$
NS_OP=kea-bench-op-$RUN_ID
NS_WARM=kea-bench-warm-$RUN_ID
NS_BEFORE=kea-bench-direct1-$RUN_ID
NS_AFTER=kea-bench-direct2-$RUN_ID
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kea-bench-operator.XXXXXX")
OPERATOR_PID=
STARTED_CONTROL_PLANE=
NODE_PATCHED=

# --- helpers (Python, for JSON) ---------------------------------------

cat >"$WORK/bench.py" <<'PY'
import json, math, re, sys, time
from datetime import datetime, timezone

def cond(obj, type_):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None

def gen_ms(n, namespace, image):
    # One multi-document file of N minimal Microservices (replicas defaults to 1).
    for i in range(n):
        print(f"---\napiVersion: kea.dev/v1alpha1\nkind: Microservice\nmetadata:\n"
              f"  name: svc-{i:05d}\n  namespace: {namespace}\nspec:\n  image: {image}")

def split(path, parts):
    # Deals the documents of a multi-document YAML file round-robin into PATH.0 .. PATH.<parts-1>.
    docs = [d for d in re.split(r"^---[ \t]*$", open(path).read(), flags=re.M) if d.strip()]
    for k in range(parts):
        with open(f"{path}.{k}", "w") as out:
            for doc in docs[k::parts]:
                out.write("---\n" + doc.strip("\n") + "\n")

def ms_ready(ms):
    c = cond(ms, "Ready")
    return bool(c and c.get("status") == "True" and c.get("observedGeneration") == ms["metadata"].get("generation"))

def deployment_available(d):
    s, want = d.get("status") or {}, d["spec"].get("replicas", 1)
    c = cond(d, "Available")
    return bool(c and c.get("status") == "True" and s.get("observedGeneration") == d["metadata"]["generation"]
                and s.get("updatedReplicas", 0) == want and s.get("availableReplicas", 0) == want
                and s.get("replicas", 0) == want)

def log(message):
    print(time.strftime("[%H:%M:%S] ") + message, file=sys.stderr, flush=True)

def alive(pid):
    # Whether process PID runs (a zombie, dead but not yet waited for, does not).
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def wait_ready(what, path, predicate, n, start, timeout, pid):
    # Watches the collection at PATH (kubectl get --raw, a watch that first lists what
    # exists as ADDED events) until N of its objects satisfy PREDICATE; prints the seconds
    # from START (epoch) to the event that made it N. A watch instead of a poll: the
    # measurement costs the API server one list, not one per poll, and is exact to the event.
    import os, select, subprocess
    is_ready = {"ms-ready": ms_ready, "deployment-available": deployment_available}[predicate]
    n, start, deadline, pid = int(n), float(start), float(start) + float(timeout), int(pid)
    decoder, ready, last_logged, last_count = json.JSONDecoder(), {}, 0.0, 0
    while True:
        remaining = int(deadline - time.time())
        if remaining <= 0:
            sys.exit(f"{what}: only {sum(ready.values())}/{n} ready after {timeout}s")
        # A new watch starts from the current state: forget the old one's.
        ready, buffer = {}, ""
        watch = subprocess.Popen(["kubectl", "get", "--raw", f"{path}?watch=1&timeoutSeconds={remaining}"],
                                 stdout=subprocess.PIPE)
        fd = watch.stdout.fileno()
        while True:
            if pid and not alive(pid):
                watch.kill()
                sys.exit(f"{what}: kea-operator (pid {pid}) died")
            if time.time() > deadline:
                watch.kill()
                sys.exit(f"{what}: only {sum(ready.values())}/{n} ready after {timeout}s")
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break  # the watch ended (its timeout, or the server closed it): start another
            buffer += chunk.decode()
            while True:
                buffer = buffer.lstrip()
                try:
                    event, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # an incomplete event: read more
                buffer = buffer[end:]
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    log(f"{what}: watch error {obj.get('message')}: watching again")
                    watch.kill()
                    break
                name = (obj.get("metadata") or {}).get("name")
                if kind == "DELETED":
                    ready.pop(name, None)
                elif kind in ("ADDED", "MODIFIED") and name:
                    ready[name] = is_ready(obj)
            count, now = sum(ready.values()), time.time()
            if count >= n:
                watch.kill()
                log(f"{what}: {count}/{n} ready ({len(ready)} exist) after {now - start:.1f}s")
                print(f"{now - start:.1f}")
                return
            if count != last_count and now - last_logged >= 2:
                log(f"{what}: {count}/{n} ready ({len(ready)} exist) after {now - start:.1f}s")
                last_logged, last_count = now, count
        watch.wait()

def capacity_patch(node_file, pods):
    # Prints "<status patch> <restore patch> <note>" as lines: room for PODS more pods on the
    # node, far more CPU and memory than they request (fixed, canonical quantities, so nothing
    # here parses one), and the node's own values to restore afterwards.
    status = json.load(open(node_file))["status"]
    new = {"pods": str(int(status["allocatable"]["pods"]) + pods), "cpu": "1k", "memory": "4Ti"}
    print(json.dumps({"status": {"capacity": new, "allocatable": new}}))
    print(json.dumps({"status": {k: {r: status[k][r] for r in new} for k in ("capacity", "allocatable")}}))
    print(", ".join(f"{r} {status['allocatable'][r]} -> {new[r]}" for r in new) + " (capacity and allocatable)")

def node_is(node_file, patch):
    # Whether the node's capacity and allocatable still equal those of the patch.
    status = json.load(open(node_file))["status"]
    want = json.loads(patch)["status"]
    sys.exit(0 if all(status.get(k, {}).get(r) == v for k in want for r, v in want[k].items()) else 1)

def operator_metrics(name):
    # Sum of one metric family of the operator's /metrics text (all label sets).
    total = 0.0
    for line in sys.stdin:
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    print(int(total))

def apiserver_mutating(kinds):
    # "<all mutating requests> <those on the operator's kinds>" from apiserver /metrics.
    kinds = set(kinds.split())
    verbs = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"}
    every = ours = 0.0
    for line in sys.stdin:
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") in verbs:
            value = float(line.rsplit(" ", 1)[1])
            every += value
            if labels.get("resource") in kinds:
                ours += value
    print(int(every), int(ours))

def apiserver_gets(kinds):
    # GET requests (single objects, not lists or watches) on these kinds, from apiserver /metrics.
    kinds, total = set(kinds.split()), 0.0
    for line in sys.stdin:
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") == "GET" and labels.get("resource") in kinds:
            total += float(line.rsplit(" ", 1)[1])
    print(int(total))

def quantiles(name):
    # p50 and p99 (ms) of a Prometheus histogram, interpolated within buckets as
    # histogram_quantile() does.
    buckets = []
    for line in sys.stdin:
        if line.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.99):
        rank, lower, below = q * total, 0.0, 0.0
        value = math.nan
        for upper, count in buckets:
            if count >= rank and total > 0:
                upper = lower if math.isinf(upper) else upper
                value = lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1)
                break
            lower, below = upper, count
        out.append(f"{value * 1000:.0f}")
    print(*out)

def newest_creation(start):
    # Seconds from START (epoch) to the newest creationTimestamp among the listed objects.
    newest = max(datetime.strptime(i["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
                 .replace(tzinfo=timezone.utc).timestamp() for i in json.load(sys.stdin)["items"])
    print(f"{newest - float(start):.1f}")

def manager_writes(manager, start, end):
    # Objects whose entry of this field manager was updated within (start, end] (epoch s).
    count = 0
    for item in json.load(sys.stdin)["items"]:
        for entry in item["metadata"].get("managedFields") or []:
            if entry.get("manager") != manager or not entry.get("time"):
                continue
            t = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
            if int(float(start)) < t <= float(end):
                count += 1
    print(count)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "gen-ms": gen_ms(int(args[0]), args[1], args[2])
elif cmd == "split": split(args[0], int(args[1]))
elif cmd == "wait-ready": wait_ready(*args)
elif cmd == "capacity-patch": capacity_patch(args[0], int(args[1]))
elif cmd == "node-is": node_is(args[0], args[1])
elif cmd == "operator-metric": operator_metrics(args[0])
elif cmd == "apiserver-mutating": apiserver_mutating(args[0])
elif cmd == "manager-writes": manager_writes(args[0], args[1], args[2])
elif cmd == "apiserver-gets": apiserver_gets(args[0])
elif cmd == "quantiles": quantiles(args[0])
elif cmd == "newest-creation": newest_creation(args[0])
else: sys.exit(f"unknown command {cmd}")
PY
py() { python3 "$WORK/bench.py" "$@"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }

# The control plane's processes on this host, by their kernel name (15 characters at most).
CONTROL_PLANE_PROCESSES="kube-apiserver etcd kube-controller kube-scheduler kwok"
# cpu_seconds PID...: CPU seconds (user + system) the processes PID have used so far.
cpu_seconds() {
  local pid total=0
  for pid in "$@"; do
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print t + ($12 + $13) / hz }' \
      "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}
# cpu_of NAME...: CPU seconds used so far by the processes named NAME.
cpu_of() {
  local name pids=()
  for name in "$@"; do
    mapfile -t -O "${#pids[@]}" pids < <(pgrep -x "$name")
  done
  cpu_seconds "${pids[@]}"
}

# --- cleanup --------------------------------------------------------------------------

stop_operator() {
  [ -n "$OPERATOR_PID" ] || return 0
  stop_processes 10 "$OPERATOR_PID" || true
  wait "$OPERATOR_PID" 2>/dev/null || true
  OPERATOR_PID=
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_operator
  if [ -z "$STARTED_CONTROL_PLANE" ]; then
    log "deleting the benchmark's namespaces"
    kubectl delete namespace "$NS_WARM" "$NS_BEFORE" "$NS_OP" "$NS_AFTER" --ignore-not-found --wait=true --timeout=600s >/dev/null ||
      log "warning: the namespaces are still being deleted"
    if [ -n "$NODE_PATCHED" ]; then
      kubectl get node "$NODE_PATCHED" -o json >"$WORK/node-now.json" 2>/dev/null || true
      if py node-is "$WORK/node-now.json" "$(sed -n 1p "$WORK/capacity")"; then
        kubectl patch node "$NODE_PATCHED" --subresource=status --type=merge \
          -p "$(sed -n 2p "$WORK/capacity")" >/dev/null && log "restored the capacity of node $NODE_PATCHED"
      else
        log "warning: node $NODE_PATCHED's capacity was changed by someone else: not restoring it"
      fi
    fi
  else
    "$HACK_DIR/control-plane.sh" down
  fi
  rm -f "$WORK"/*.yaml "$WORK"/*.json
  log "operator log and figures kept in $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- setup ----------------------------------------------------------------------------

eval "$("$HACK_DIR/control-plane.sh" env)"
if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  log "the control plane is down: starting it (stopped again on exit)"
  STARTED_CONTROL_PLANE=1
  "$HACK_DIR/control-plane.sh" up
  eval "$("$HACK_DIR/control-plane.sh" env)"
fi

log "building kea-operator (profile release-small, as its image)"
cargo build -q --profile release-small -p kea-cli
TARGET_DIR=$(cargo_target_dir)
OPERATOR="$TARGET_DIR/release-small/kea-operator"

log "installing the CRD"
"$OPERATOR" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/microservices.kea.dev >/dev/null

log "generating $N Microservices"
py gen-ms "$N" "$NS_OP" "$IMAGE" >"$WORK/microservices.yaml"
# Room for 2N pods on the first kwok node (the operator arm's pods may still be
# terminating when the baseline's start).
NODE=$(kubectl get nodes -o json |
  python3 -c 'import json,sys; print(next((n["metadata"]["name"] for n in json.load(sys.stdin)["items"] if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"), ""))')
[ -n "$NODE" ] || die "no kwok node (annotation kwok.x-k8s.io/node=fake) in the cluster"
kubectl get node "$NODE" -o json >"$WORK/node.json"
py capacity-patch "$WORK/node.json" $((2 * N)) >"$WORK/capacity"
NODE_NOTE="patched node $NODE status for the run: $(sed -n 3p "$WORK/capacity")"
kubectl patch node "$NODE" --subresource=status --type=merge -p "$(sed -n 1p "$WORK/capacity")" >/dev/null
NODE_PATCHED=$NODE
for _ in $(seq 50); do
  kubectl get node "$NODE" -o json >"$WORK/node-now.json"
  py node-is "$WORK/node-now.json" "$(sed -n 1p "$WORK/capacity")" && break
  sleep 0.1
done
py node-is "$WORK/node-now.json" "$(sed -n 1p "$WORK/capacity")" || die "the capacity patch of node $NODE did not stick"
log "$NODE_NOTE"

# apply_all FILE: server-side apply of FILE by $APPLIERS concurrent kubectl processes.
apply_all() {
  local k pids=()
  py split "$1" "$APPLIERS"
  for ((k = 0; k < APPLIERS; k++)); do
    [ -s "$1.$k" ] || continue
    kubectl apply --server-side -f "$1.$k" >"$1.$k.out" 2>&1 &
    pids+=($!)
  done
  for k in "${pids[@]}"; do
    wait "$k" || { cat "$1".*.out >&2; die "kubectl apply of $1 failed"; }
  done
}

# wait_all WHAT PATH PREDICATE COUNT START: watches the collection at API path PATH until
# COUNT objects satisfy PREDICATE (see wait_ready); writes the seconds since START to
# WORK/WHAT.seconds.
wait_all() {
  py wait-ready "$1" "$2" "$3" "$4" "$5" "$TIMEOUT" "${OPERATOR_PID:-0}" >"$WORK/$1.seconds" ||
    die "$1: not all $4 ready (log: $WORK/operator.log)"
}

# direct_arm TAG NAMESPACE COUNT: renders the children of COUNT Microservices for NAMESPACE
# (`kea-operator render`), applies them to it by $APPLIERS concurrent clients, waits until
# every Deployment is Available and deletes the namespace. Sets APPLIED and READY, the
# seconds from the first apply until all were applied and until all were Available.
direct_arm() {
  local tag=$1 namespace=$2 count=$3 start
  py gen-ms "$count" "$namespace" "$IMAGE" >"$WORK/$tag-ms.yaml"
  "$OPERATOR" render "$WORK/$tag-ms.yaml" >"$WORK/$tag.yaml"
  [ "$(grep -c '^kind: Deployment' "$WORK/$tag.yaml")" -eq "$count" ] || die "render did not give $count Deployments"
  kubectl create namespace "$namespace" >/dev/null
  log "$tag: applying the children of $count Microservices to $namespace ($APPLIERS kubectl processes)"
  local api_cpu0 cp_cpu0
  api_cpu0=$(cpu_of kube-apiserver)
  cp_cpu0=$(cpu_of $CONTROL_PLANE_PROCESSES)
  start=$(now)
  apply_all "$WORK/$tag.yaml"
  APPLIED=$(elapsed "$start" "$(now)")
  log "$tag: applied in ${APPLIED}s"
  wait_all "$tag" "/apis/apps/v1/namespaces/$namespace/deployments" deployment-available "$count" "$start"
  READY=$(cat "$WORK/$tag.seconds")
  API_CPU=$(elapsed "$api_cpu0" "$(cpu_of kube-apiserver)")
  CP_CPU=$(elapsed "$cp_cpu0" "$(cpu_of $CONTROL_PLANE_PROCESSES)")
  kubectl delete namespace "$namespace" --wait=true --timeout=600s >/dev/null ||
    log "warning: $namespace is still being deleted"
}

# --- the direct arm before, the operator arm, the direct arm after ---------------------

# The direct arm runs before and after the operator arm and the ratios use the mean of the
# two, so that neither arm is favoured by running first or last (the control plane's heaps,
# caches and etcd's database change from one arm to the next). On a control plane just
# started the first arm would also pay for cold caches and look a fifth slower: a quarter
# of the direct arm, not measured, warms them first.
direct_arm warm-up "$NS_WARM" $(((N + 3) / 4))
direct_arm direct-before "$NS_BEFORE" "$N"
APPLY_BEFORE=$APPLIED
READY_BEFORE=$READY
API_CPU_BEFORE=$API_CPU
CP_CPU_BEFORE=$CP_CPU

# --- operator arm ---------------------------------------------------------------------

kubectl create namespace "$NS_OP" >/dev/null
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
METRICS_URL="http://127.0.0.1:$PORT/metrics"
log "starting kea-operator on namespace $NS_OP (metrics on 127.0.0.1:$PORT, log $WORK/operator.log)"
KEA_HTTP_ADDR="127.0.0.1:$PORT" KEA_WATCH_NAMESPACE="$NS_OP" KEA_LOG_FORMAT=json RUST_LOG=info \
  KEA_CONCURRENCY="$CONCURRENCY" \
  "$OPERATOR" run --leader-elect=false >"$WORK/operator.log" 2>&1 &
OPERATOR_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$OPERATOR_PID" 2>/dev/null || { tail -n 20 "$WORK/operator.log" >&2; die "kea-operator exited"; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null || die "kea-operator is not ready"

log "operator arm: applying $N Microservices to $NS_OP ($APPLIERS kubectl processes)"
kubectl get --raw /metrics >"$WORK/arm-start.apiserver.txt"
API_CPU0=$(cpu_of kube-apiserver)
CP_CPU0=$(cpu_of $CONTROL_PLANE_PROCESSES)
START=$(now)
apply_all "$WORK/microservices.yaml"
APPLY_OP=$(elapsed "$START" "$(now)")
log "operator arm: applied in ${APPLY_OP}s"
wait_all operator "/apis/kea.dev/v1alpha1/namespaces/$NS_OP/microservices" ms-ready "$N" "$START"
T_OP=$(cat "$WORK/operator.seconds")
API_CPU_OP=$(elapsed "$API_CPU0" "$(cpu_of kube-apiserver)")
CP_CPU_OP=$(elapsed "$CP_CPU0" "$(cpu_of $CONTROL_PLANE_PROCESSES)")
OPERATOR_CPU=$(elapsed 0 "$(cpu_seconds "$OPERATOR_PID")")
kubectl get --raw /metrics >"$WORK/arm-end.apiserver.txt"
curl -fsS "$METRICS_URL" >"$WORK/arm-end.operator.txt"
T_CHILDREN=$(kubectl get deployments,services,networkpolicies -n "$NS_OP" -o json | py newest-creation "$START")
ARM_RECONCILES=$(py operator-metric kea_operator_reconciles_total <"$WORK/arm-end.operator.txt")
read -r P50_MS P99_MS < <(py quantiles kea_operator_reconcile_duration_seconds <"$WORK/arm-end.operator.txt")
ARM_GETS=$(($(py apiserver-gets "$CHILD_KINDS" <"$WORK/arm-end.apiserver.txt") - $(py apiserver-gets "$CHILD_KINDS" <"$WORK/arm-start.apiserver.txt")))

log "steady state: waiting ${SETTLE}s, then measuring writes over ${WINDOW}s"
sleep "$SETTLE"
snapshot() { # snapshot NAME: operator counters and apiserver mutating requests
  curl -fsS "$METRICS_URL" >"$WORK/$1.operator.txt"
  kubectl get --raw /metrics >"$WORK/$1.apiserver.txt"
}
W_START=$(now)
snapshot before
sleep "$WINDOW"
snapshot after
W_END=$(now)
metric() { py operator-metric "$2" <"$WORK/$1.operator.txt"; }
OP_WRITES=$(($(metric after kea_operator_api_writes_total) - $(metric before kea_operator_api_writes_total)))
OP_RECONCILES=$(($(metric after kea_operator_reconciles_total) - $(metric before kea_operator_reconciles_total)))
OP_ERRORS=$(metric after kea_operator_reconcile_errors_total)
OP_WRITES_TOTAL=$(metric after kea_operator_api_writes_total)
read -r API_ALL_0 API_OURS_0 < <(py apiserver-mutating "$OPERATOR_KINDS" <"$WORK/before.apiserver.txt")
read -r API_ALL_1 API_OURS_1 < <(py apiserver-mutating "$OPERATOR_KINDS" <"$WORK/after.apiserver.txt")
API_ALL=$((API_ALL_1 - API_ALL_0))
API_OURS=$((API_OURS_1 - API_OURS_0))
MANAGER_WRITES=$(kubectl get deployments,services,microservices.kea.dev -n "$NS_OP" -o json |
  py manager-writes kea-operator "$W_START" "$W_END")
RSS_MIB=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$OPERATOR_PID/status")
log "operator arm: stopping kea-operator and deleting $NS_OP"
stop_operator
kubectl delete namespace "$NS_OP" --wait=true --timeout=600s >/dev/null ||
  log "warning: $NS_OP is still being deleted; the direct arm runs alongside"

direct_arm direct-after "$NS_AFTER" "$N"
APPLY_AFTER=$APPLIED
READY_AFTER=$READY
API_CPU_AFTER=$API_CPU
CP_CPU_AFTER=$CP_CPU
APPLY_DIRECT=$(awk -v a="$APPLY_BEFORE" -v b="$APPLY_AFTER" 'BEGIN {printf "%.1f", (a + b) / 2}')
T_DIRECT=$(awk -v a="$READY_BEFORE" -v b="$READY_AFTER" 'BEGIN {printf "%.1f", (a + b) / 2}')

# --- report ---------------------------------------------------------------------------

{
  echo
  echo "kea-operator at scale ($(date -u +%Y-%m-%d), $(nproc) cores, Kubernetes $KUBERNETES_VERSION, kwok $KWOK_VERSION)"
  printf '| %-64s | %13s |\n' "measure" "value"
  printf '|%s|%s|\n' "$(printf -- '-%.0s' $(seq 66))" "$(printf -- '-%.0s' $(seq 15))"
  row() { printf '| %-64s | %13s |\n' "$1" "$2"; }
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
  row "N (Microservices; their rendered children in the direct arm)" "$N"
  row "operator: seconds until every Microservice's children exist" "$T_CHILDREN"
  row "direct: seconds to apply the same children ($APPLIERS clients), mean" "$APPLY_DIRECT"
  row "  before / after the operator arm" "$APPLY_BEFORE / $APPLY_AFTER"
  row "ratio operator / direct, children applied (target <= 1.5)" "$(ratio "$T_CHILDREN" "$APPLY_DIRECT")"
  row "operator: Microservices with all children applied per second" "$(ratio "$N" "$T_CHILDREN")"
  row "operator: reconciles per second until all Ready" "$(ratio "$ARM_RECONCILES" "$T_OP")"
  row "operator: reconcile latency p50 / p99, ms" "$P50_MS / $P99_MS"
  row "apiserver GETs on child kinds until all Ready (cache reads)" "$ARM_GETS"
  row "operator: seconds until all Microservices Ready" "$T_OP"
  row "  of which the client's apply of the Microservices" "$APPLY_OP"
  row "direct: seconds until all Deployments Available, mean" "$T_DIRECT"
  row "  before / after the operator arm" "$READY_BEFORE / $READY_AFTER"
  row "ratio operator / direct, end to end (target <= 1.2)" "$(ratio "$T_OP" "$T_DIRECT")"
  row "operator peak RSS (VmHWM), MiB" "$RSS_MIB"
  row "operator: CPU seconds until all Ready" "$OPERATOR_CPU"
  row "kube-apiserver CPU seconds until all Ready: operator arm" "$API_CPU_OP"
  row "  direct, before / after" "$API_CPU_BEFORE / $API_CPU_AFTER"
  row "control plane CPU seconds until all Ready: operator arm" "$CP_CPU_OP"
  row "  direct, before / after" "$CP_CPU_BEFORE / $CP_CPU_AFTER"
  row "operator writes in the ${WINDOW}s steady-state window (target 0)" "$OP_WRITES"
  row "objects changed by field manager kea-operator in the window" "$MANAGER_WRITES"
  row "apiserver mutating requests in the window, all" "$API_ALL"
  row "  of which on deploy/svc/ms/pdb/hpa/events (any namespace)" "$API_OURS"
  echo
  echo "operator: $OP_WRITES_TOTAL writes ($(awk -v w="$OP_WRITES_TOTAL" -v n="$N" 'BEGIN {printf "%.1f", w / n}') per Microservice) and $OP_ERRORS failed reconciles in all, $OP_RECONCILES reconciles in the window"
  echo "$NODE_NOTE"
  echo "apiserver counts are cluster-wide (kwok's node and lease updates, other clients included)"
  echo "control plane: kube-controller-manager $(ps -o args= -C kube-controller-manager | grep -o -- '--kube-api-qps [0-9]*' || echo 'default client rate limit')"
} | tee "$WORK/report.txt"
