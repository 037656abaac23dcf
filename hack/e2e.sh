#!/usr/bin/env bash
# The end-to-end suite (crate e2e/, kea-e2e) on the local kind cluster, with the operator
# installed one way or the other:
#
#   hack/e2e.sh kubectl   # kubectl apply -f deploy/, deploy/examples/, the suite, uninstall
#   hack/e2e.sh helm      # helm install kea-operator charts/kea-operator, same steps, then
#                         # helm test, the network tests again with
#                         # networkPolicies.enabled=false, and the operator confined to one
#                         # namespace (operator.watchNamespace, e2e/tests/e2e/namespaced.rs)
#   hack/e2e.sh all       # both modes in turn on one cluster (the rollouts and the drain
#                         # under load in the first only), then hack/kind.sh down
#
# The cluster (kea-e2e, not the demo's kea; KEA_KIND_CLUSTER names another) is created
# first if missing (hack/kind.sh up; the images must be built: hack/images.sh). Each mode uninstalls everything it installed, so the other mode can run on
# the same cluster. The suite itself is cluster-agnostic: against any cluster with the
# operator and the examples installed, run
#   KUBECONFIG=... KEA_E2E=1 cargo test -p kea-e2e --test e2e -- --ignored --test-threads=2
# Env: KEA_E2E_KEEP=1 leaves the installation (and failed tests' namespaces) in place;
# KEA_E2E_TEST_ARGS adds arguments for the test binary (e.g. a test name filter). The tests
# of e2e/tests/e2e/disruption.rs drain a node, so they run alone after the others; those of
# namespaced.rs need the confined operator, so they run in that phase only.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
toolchain_path

# A cluster of the tests' own, so that the demo's (kea) is left alone.
export KEA_KIND_CLUSTER=${KEA_KIND_CLUSTER:-kea-e2e}
export KEA_KIND_KUBECONFIG=${KEA_KIND_KUBECONFIG:-$(kind_kubeconfig "$KEA_KIND_CLUSTER")}
export KUBECONFIG=$KEA_KIND_KUBECONFIG
# The testkit's own variable, should anything in the suite go through it.
export KEA_KUBECONFIG=$KUBECONFIG
WAIT=${KEA_E2E_WAIT:-300s}
OPERATOR_NS=$(awk '/^  name:/ {print $2; exit}' "$REPO_ROOT/deploy/01-namespace.yaml")
RELEASE=kea-operator

require_cmd kubectl "build it with hack/toolchain.sh kind"
require_cmd helm "build it with hack/toolchain.sh helm"
require_cmd cargo "install Rust"

cluster_up() {
  if kind get clusters 2>/dev/null | grep -qx "$KEA_KIND_CLUSTER" && kubectl get --raw /readyz >/dev/null 2>&1; then
    log "kind cluster $KEA_KIND_CLUSTER is up"
  else
    "$HACK_DIR/kind.sh" up
  fi
}

install_operator() {
  local mode=$1
  case "$mode" in
    kubectl)
      deploy_operator "$WAIT"
      ;;
    helm)
      # The namespace with its Pod Security labels, as deploy/ has it.
      kubectl apply -f "$REPO_ROOT/deploy/01-namespace.yaml" >/dev/null
      # No registry: the store servers are the images hack/images.sh builds.
      helm install "$RELEASE" "$REPO_ROOT/charts/kea-operator" -n "$OPERATOR_NS" --wait \
        --set stores.images.mariadb=kea.dev/kea-mariadb:dev --set stores.images.redis=kea.dev/kea-redis:dev \
        --timeout "$WAIT" >/dev/null
      wait_operator "$OPERATOR_NS" "$WAIT"
      ;;
  esac
  kubectl -n "$OPERATOR_NS" get pods >&2
}

# suite [ARGS...]: the e2e test binary with ARGS after `--`.
suite() {
  # --nocapture: the tests print what they measured (times, counts).
  (cd "$REPO_ROOT" && KEA_E2E=1 cargo test -p kea-e2e --test e2e -- --ignored --nocapture "$@")
}

run_suite() {
  # shellcheck disable=SC2086 # KEA_E2E_TEST_ARGS is a list of words
  suite --test-threads=2 --skip disruption:: --skip rollout:: --skip namespaced:: ${KEA_E2E_TEST_ARGS:-}
}

# A node drain evicts every pod of the node, and the tests that count every dropped request
# measure the cluster's endpoint propagation, not the CPU left over by a parallel test: these
# run alone.
run_alone() {
  suite --test-threads=1 disruption:: rollout::
}

# helm_set NAME=VALUE: the release upgraded with one value changed, the operator rolled out.
helm_set() {
  helm upgrade "$RELEASE" "$REPO_ROOT/charts/kea-operator" -n "$OPERATOR_NS" --reuse-values \
    --set "$1" --wait --timeout "$WAIT" >/dev/null && wait_operator "$OPERATOR_NS" "$WAIT"
}

# The network tests again with the operator's NetworkPolicies switched off: the operator
# removes the ones it wrote and the calls they blocked get through.
run_without_policies() {
  helm_set networkPolicies.enabled=false && KEA_E2E_NETWORK_POLICIES=0 suite --test-threads=1 network::
}

# helm test: the chart's test pod GETs the operator's /readyz through its Service.
run_helm_test() {
  helm test "$RELEASE" -n "$OPERATOR_NS" --timeout "$WAIT"
}

# The operator confined to one namespace (operator.watchNamespace): a Role there instead of
# a ClusterRole over every namespace; the namespaced tests check what it runs and may do.
run_watching_one_namespace() {
  local watched=e2e-watched
  kubectl create namespace "$watched" >/dev/null
  kubectl label namespace "$watched" kea.dev/e2e=true pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/audit=restricted pod-security.kubernetes.io/warn=restricted >/dev/null
  helm_set operator.watchNamespace="$watched" &&
    KEA_E2E_WATCH_NAMESPACE=$watched suite --test-threads=1 namespaced::
}
uninstall() {
  local mode=$1
  # The test namespaces first, while the operator still runs; then the examples.
  kubectl delete namespace -l kea.dev/e2e=true --wait=true --timeout="$WAIT" >/dev/null 2>&1 || true
  kubectl delete -f "$REPO_ROOT/deploy/examples/" --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null
  case "$mode" in
    kubectl)
      kubectl delete -f "$REPO_ROOT/deploy/" --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null
      ;;
    helm)
      helm uninstall "$RELEASE" -n "$OPERATOR_NS" --wait --timeout "$WAIT" >/dev/null || true
      # The chart keeps its CRD on uninstall (crds.keep): remove it, and the namespace, so
      # that the other mode starts from a clean cluster.
      kubectl delete crd microservices.kea.dev --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null
      kubectl delete -f "$REPO_ROOT/deploy/01-namespace.yaml" --ignore-not-found --wait=true \
        --timeout="$WAIT" >/dev/null
      ;;
  esac
}

# The mode whose run_alone passed in this run, if any.
RAN_ALONE=

# mode MODE: install, test, uninstall; returns the suite's result.
mode() {
  local mode=$1 rc=0
  timed "[$mode] install operator" install_operator "$mode" || rc=$?
  [ $rc = 0 ] && { timed "[$mode] apply examples, wait Ready" deploy_examples "$WAIT" || rc=$?; }
  [ $rc = 0 ] && { timed "[$mode] cargo test -p kea-e2e" run_suite || rc=$?; }
  # The rollouts and the drain under load test the operator and the cluster, not how the
  # operator was installed: in `all`, they run in the first mode only (about 22 minutes).
  if [ -n "$RAN_ALONE" ]; then
    log "[$mode] rollout, worker drain under load: ran in the $RAN_ALONE mode of this run"
  elif [ $rc = 0 ]; then
    timed "[$mode] rollout, worker drain under load" run_alone && RAN_ALONE=$mode || rc=$?
  fi
  if [ "$mode" = helm ]; then
    [ $rc = 0 ] && { timed "[$mode] helm test" run_helm_test || rc=$?; }
    [ $rc = 0 ] && { timed "[$mode] NetworkPolicies off" run_without_policies || rc=$?; }
    [ $rc = 0 ] && { timed "[$mode] one namespace watched" run_watching_one_namespace || rc=$?; }
  fi
  if [ "${KEA_E2E_KEEP:-0}" = 1 ]; then
    log "KEA_E2E_KEEP=1: leaving the $mode installation in place"
  else
    timed "[$mode] uninstall" uninstall "$mode" || rc=$?
  fi
  return $rc
}

main() {
  local what=${1:-kubectl} rc=0 start=$EPOCHREALTIME
  case "$what" in
    kubectl | helm)
      timed "cluster up" cluster_up || { timed_summary; exit 1; }
      mode "$what" || rc=$?
      ;;
    all)
      # A cluster of this run's own: the leftover of an interrupted earlier run may be half
      # broken (restarted nodes, a stale metrics API), so it goes first, and this run's
      # cluster goes however the run ends.
      trap '"$HACK_DIR/kind.sh" down >/dev/null 2>&1 || true' EXIT
      "$HACK_DIR/kind.sh" down >/dev/null 2>&1 || true
      timed "cluster up" cluster_up || { timed_summary; exit 1; }
      mode kubectl || rc=$?
      mode helm || rc=$?
      timed "cluster down" "$HACK_DIR/kind.sh" down || true
      ;;
    *) die "usage: $0 [kubectl|helm|all]" ;;
  esac
  TIMED_LINES+=("$(printf '%-50s %s' total "$(seconds_since "$start")")")
  timed_summary
  if [ $rc = 0 ]; then log "e2e ($what) passed"; else log "e2e ($what) FAILED"; fi
  return $rc
}

main "$@"
