#!/usr/bin/env bash
# The project's single test command: formatting and lints (fast fail), then every
# test of the workspace against a real control plane (hack/control-plane.sh) and the
# backing services the service's tests need. Whatever it starts is stopped on exit,
# pass or fail.
#
#   hack/test.sh
#
# The first run builds the control-plane toolchain from the Go module proxy (tens of
# minutes on 2 cores, cached in $KEA_CACHE_DIR afterwards).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

# Hooks for the databases the service's integration tests use (hack/backing-services.sh).
backing_services_up() {
  "$HACK_DIR/backing-services.sh" start
  eval "$("$HACK_DIR/backing-services.sh" env)"
}
backing_services_down() {
  "$HACK_DIR/backing-services.sh" stop
}

# phase NAME COMMAND...: run a step and say how long it took.
phase() {
  local name=$1 start=$SECONDS
  shift
  log "== $name"
  "$@"
  log "== $name: ok ($((SECONDS - start))s)"
}

lint() {
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
}

# Generated files (CRD, chart templates, deploy/ manifests, diagrams) must match their sources.
generated_files() {
  "$HACK_DIR/toolchain.sh" helm
  "$HACK_DIR/manifests.sh" --check
  apt_install plantuml graphviz
  "$HACK_DIR/diagrams.sh" --check
}

ensure_toolchain() {
  local tool
  for tool in "etcd $ETCD_VERSION" "kwok $KWOK_VERSION" "kube-apiserver $KUBERNETES_VERSION" \
    "kube-controller-manager $KUBERNETES_VERSION" "kube-scheduler $KUBERNETES_VERSION" \
    "kubectl $KUBERNETES_VERSION"; do
    # shellcheck disable=SC2086 # "name version" splits into two arguments
    if [ ! -f "$(tool_bin $tool)" ] || [ ! -x "$(tool_bin $tool)" ]; then
      "$HACK_DIR/toolchain.sh" control-plane
      return
    fi
  done
}

# The end-to-end tier: the real images on a kind cluster whose node image is assembled
# offline (hack/kind-node-image.sh), with the operator installed by kubectl and by helm.
# The tests' own kind cluster: the demo's (kea) is neither used nor deleted.
export KEA_KIND_CLUSTER=${KEA_KIND_CLUSTER:-kea-e2e}
started_docker=false
e2e_on_kind() {
  if ! "$HACK_DIR/docker.sh" status >/dev/null 2>&1; then
    started_docker=true
    "$HACK_DIR/docker.sh" start
  fi
  "$HACK_DIR/toolchain.sh" kind
  "$HACK_DIR/images.sh"
  "$HACK_DIR/e2e.sh" all
}

# On a machine with an empty cache the kind tier first builds the node's Kubernetes
# binaries, its add-ons and its Debian rootfs (about 75 minutes on 2 cores). When that would
# not fit in the time budget of the run (KEA_TEST_BUDGET_MINUTES, default 80) the run fails
# at once and says how to warm the cache, rather than passing without the tier; with a warm
# cache the tier takes about 20 minutes. KEA_E2E=0 leaves it out on purpose, and says so.
e2e_fits_budget() {
  if [ "${KEA_E2E:-1}" = 0 ]; then
    log "*** KEA_E2E=0: the kind end-to-end tier is left out of this run"
    return 1
  fi
  local budget=${KEA_TEST_BUDGET_MINUTES:-80} used=$(((SECONDS - total) / 60)) needed=10 tool
  for tool in "kubelet $KUBERNETES_VERSION" "kubeadm $KUBERNETES_VERSION" "kube-proxy $KUBERNETES_VERSION" \
    "kind $KIND_VERSION" "crictl $CRICTL_VERSION" "coredns $COREDNS_VERSION"; do
    # shellcheck disable=SC2086 # "name version" splits into two arguments
    [ -x "$(tool_bin $tool)" ] || needed=55
  done
  # the cluster's add-ons (kube-router, metrics-server): 8-10 min each on 2 busy cores
  [ -x "$(tool_bin kube-router "$KUBE_ROUTER_VERSION")" ] || needed=$((needed + 10))
  [ -x "$(tool_bin metrics-server "$METRICS_SERVER_VERSION")" ] || needed=$((needed + 10))
  compgen -G "$KEA_CACHE_DIR/kind/rootfs-*.tar" >/dev/null || needed=$((needed + 5))
  if [ $((used + needed)) -gt "$budget" ]; then
    log "*** FAILED: the kind end-to-end tier needs about $needed min (cold cache) and $used of"
    log "*** the $budget min budget are used. Warm the cache first (hack/toolchain.sh all,"
    log "*** hack/kind-node-image.sh), or raise KEA_TEST_BUDGET_MINUTES."
    exit 1
  fi
}

started_control_plane=false
cleanup() {
  local status=$?
  if $started_docker; then
    "$HACK_DIR/kind.sh" down >/dev/null 2>&1 || true
    "$HACK_DIR/docker.sh" stop || log "stopping dockerd failed"
  fi
  backing_services_down || log "stopping the backing services failed"
  if $started_control_plane; then
    "$HACK_DIR/control-plane.sh" down || log "stopping the control plane failed"
  fi
  exit $status
}
trap cleanup EXIT

start_control_plane() {
  # A control plane a developer started by hand is used and left running.
  if "$HACK_DIR/control-plane.sh" status >/dev/null 2>&1; then
    log "using the control plane that is already running (left running afterwards)"
  else
    started_control_plane=true
    "$HACK_DIR/control-plane.sh" up
  fi
}

total=$SECONDS
phase "cargo fmt --check, cargo clippy -D warnings" lint
phase "control-plane toolchain" ensure_toolchain
phase "generated files are up to date" generated_files
phase "control plane" start_control_plane
phase "backing services" backing_services_up
eval "$("$HACK_DIR/control-plane.sh" env)"
# The tests of the control plane and backing-services tiers are #[ignore]d for a plain
# `cargo test`; here their tiers run, so they run too. The kind tier's come later.
phase "cargo test --workspace --all-targets -- --include-ignored (all but kind's)" \
  cargo test --workspace --all-targets --exclude kea-e2e -- --include-ignored
phase "cargo test -p kea-e2e (its own unit tests)" cargo test -p kea-e2e --all-targets
phase "kea-service API contract (openapi-spec-validator, schemathesis)" "$HACK_DIR/api-contract.sh"
if e2e_fits_budget; then
  phase "end-to-end on kind (kubectl apply and helm install)" e2e_on_kind
fi
log "all tests passed ($((SECONDS - total))s)"
