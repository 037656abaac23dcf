#!/usr/bin/env bash
# The project's single test command: formatting and lints (fast fail), then every
# test of the workspace against a real control plane (hack/control-plane.sh) and the
# backing services the service's tests need, the service's API contract, and the
# end-to-end tier on kind. Each phase starts what it needs; what the run starts is
# stopped on exit, pass or fail, and what already ran is used and left running.
#
#   hack/test.sh              # every phase, in this order
#   hack/test.sh PHASE...     # just these
#
# Phases:
#   lint        cargo fmt --check, cargo clippy -D warnings
#   generated   the generated files (CRD, chart, deploy/, diagrams) match their sources
#   cargo       cargo test --workspace -- --include-ignored: the control-plane toolchain,
#               the control plane and the backing services (MariaDB, Redis) first
#   contract    kea-service's HTTP API against its OpenAPI document (hack/api-contract.sh)
#   e2e         the kind tier (hack/e2e.sh all: kubectl apply, helm install, and the release
#               pulled from a local registry): Docker, the kind toolchain and the images first; fails at once when a cold cache would not fit the time budget
#               (KEA_TEST_BUDGET_MINUTES, default 80); KEA_E2E=0 leaves it out
#
# The first run builds the toolchain from the Go module proxy (tens of minutes on 2 cores,
# cached in $KEA_CACHE_DIR afterwards).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

PHASES=(lint generated cargo contract e2e)

# What this run started: the hack/ commands ("SCRIPT ARG") that stop it, newest first.
STOP_ON_EXIT=()
# start_unless_running WHAT SCRIPT START STOP...: `SCRIPT START` unless `SCRIPT status` says
# WHAT runs already (then it is used and left running); the STOP commands run on exit.
start_unless_running() {
  if "$HACK_DIR/$2" status >/dev/null 2>&1; then
    log "using the $1 that is already running (left running afterwards)"
    return 0
  fi
  local script=$2 start=$3
  shift 3
  STOP_ON_EXIT=("$@" "${STOP_ON_EXIT[@]}")
  "$HACK_DIR/$script" "$start"
}

cleanup() {
  local status=$? entry
  [ $status = 0 ] || [ -z "$TIMED_STEP" ] || log "== $TIMED_STEP: FAILED (exit $status)"
  for entry in "${STOP_ON_EXIT[@]}"; do
    # shellcheck disable=SC2086 # "SCRIPT VERB"
    "$HACK_DIR/"$entry || log "hack/$entry failed"
  done
  timed_summary
  exit $status
}
trap cleanup EXIT

phase_lint() {
  timed "cargo fmt --check" cargo fmt --all --check
  timed "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
}

# Generated files (CRD, chart templates, deploy/ manifests, diagrams) must match their sources.
generated_files() {
  "$HACK_DIR/toolchain.sh" helm
  apt_install plantuml graphviz
  cargo xtask generate --check
}

phase_generated() {
  timed "generated files are up to date" generated_files
}

phase_cargo() {
  timed "control-plane toolchain" "$HACK_DIR/toolchain.sh" control-plane
  timed "control plane" start_unless_running "control plane" control-plane.sh up "control-plane.sh down"
  # The databases the service's integration tests use.
  timed "backing services" start_unless_running "backing services" backing-services.sh start "backing-services.sh stop"
  eval "$("$HACK_DIR/control-plane.sh" env)"
  eval "$("$HACK_DIR/backing-services.sh" env)"
  # The tests of the control plane and backing-services tiers are #[ignore]d for a plain
  # `cargo test`; here their tiers run, so they run too. The kind tier's are the e2e phase's.
  timed "cargo test --workspace --all-targets -- --include-ignored (all but kind's)" \
    cargo test --workspace --all-targets --exclude kea-e2e -- --include-ignored
  timed "cargo test -p kea-e2e (its own unit tests)" cargo test -p kea-e2e --all-targets
}

phase_contract() {
  timed "kea-service API contract (openapi-spec-validator, schemathesis)" "$HACK_DIR/api-contract.sh"
}

# The end-to-end tier: the real images on a kind cluster whose node image is assembled
# offline (hack/kind-node-image.sh), with the operator installed by kubectl and by helm.
# The tests' own kind cluster: the demo's (kea) is neither used nor deleted.
export KEA_KIND_CLUSTER=${KEA_KIND_CLUSTER:-kea-e2e}
phase_e2e() {
  e2e_fits_budget || return 0
  timed "end-to-end on kind (kubectl apply, helm install, the release from a registry)" e2e_on_kind
}
e2e_on_kind() {
  start_unless_running "Docker engine" docker.sh start "kind.sh down" "docker.sh stop"
  "$HACK_DIR/toolchain.sh" kind helm release
  "$HACK_DIR/images.sh"
  "$HACK_DIR/e2e.sh" all
}

# On a machine with an empty cache the kind tier first builds the node's Kubernetes
# binaries, its add-ons and its Debian rootfs (about 75 minutes on 2 cores). When that would
# not fit in the time budget of the run (KEA_TEST_BUDGET_MINUTES, default 80) the run fails
# at once and says how to warm the cache, rather than passing without the tier; with a warm
# cache the tier takes about 45 minutes (3 modes; the release mode about 4). KEA_E2E=0
# leaves it out on purpose, and says so.
e2e_fits_budget() {
  if [ "${KEA_E2E:-1}" = 0 ]; then
    log "*** KEA_E2E=0: the kind end-to-end tier is left out of this run"
    return 1
  fi
  local budget=${KEA_TEST_BUDGET_MINUTES:-80} used=$((SECONDS / 60)) needed
  # the tier itself, the tools not built yet, the node rootfs
  needed=$((10 + $("$HACK_DIR/toolchain.sh" missing kind helm release | awk '{m += $3} END {print m + 0}')))
  compgen -G "$KEA_CACHE_DIR/kind/rootfs-*.tar" >/dev/null || needed=$((needed + 5))
  if [ $((used + needed)) -gt "$budget" ]; then
    log "*** FAILED: the kind end-to-end tier needs about $needed min (cold cache) and $used of"
    log "*** the $budget min budget are used. Warm the cache first (hack/toolchain.sh all,"
    log "*** hack/kind-node-image.sh), or raise KEA_TEST_BUDGET_MINUTES."
    exit 1
  fi
}

case "${1:-}" in
  -h | --help) help_text; exit 0 ;;
  "") set -- "${PHASES[@]}" ;;
esac
for phase in "$@"; do
  [[ " ${PHASES[*]} " == *" $phase "* ]] || die "unknown phase '$phase': use ${PHASES[*]} (--help)"
done
for phase in "$@"; do "phase_$phase"; done
log "$([ "$*" = "${PHASES[*]}" ] && echo "all tests" || echo "$*") passed (${SECONDS}s)"
