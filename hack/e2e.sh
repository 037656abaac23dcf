#!/usr/bin/env bash
# The end-to-end suite (crate e2e/, kea-e2e) on the local kind cluster, with the operator
# installed one way or the other:
#
#   hack/e2e.sh kubectl   # kubectl apply -f deploy/, deploy/examples/, the suite, uninstall
#   hack/e2e.sh helm      # helm install kea-operator charts/kea-operator, same steps, then
#                         # helm test, the network tests again with
#                         # networkPolicies.enabled=false, and the operator confined to one
#                         # namespace (operator.watchNamespace, e2e/tests/e2e/namespaced.rs)
#   hack/e2e.sh release   # the release from a registry (hack/registry.sh, hack/release.sh):
#                         # the previous commit's release installed with helm from the
#                         # registry, upgraded to this one under load; cosign verify; this
#                         # release by `helm install oci://...` and by `kubectl apply -f
#                         # kea.yaml`, every kea image pulled through the nodes' mirror
#   hack/e2e.sh all       # the three modes in turn on one cluster (the rollouts and the drain
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
require_cmd cosign "build it with hack/toolchain.sh release"
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
      # This tree's chart on this tree's images (hack/images.sh), loaded onto the nodes.
      helm install "$RELEASE" "$REPO_ROOT/charts/kea-operator" -n "$OPERATOR_NS" --wait \
        --set image.repository=kea.dev/kea-operator --set image.tag=dev \
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
  suite --test-threads=2 --skip disruption:: --skip rollout:: --skip namespaced:: --skip release:: ${KEA_E2E_TEST_ARGS:-}
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

# --- release: the user's paths from a registry --------------------------------------
# hack/release.sh publishes to the local registry (hack/registry.sh), which the nodes reach as
# the chart's own registry host (ghcr.io) through a containerd mirror: every kea image is
# pulled (the kubelet's events say so), none is preloaded.
RELEASE_WORK="$KEA_CACHE_DIR/e2e-release"
# What the images are built from (hack/images.sh and hack/store-images.sh read no more).
IMAGE_INPUTS="Cargo.toml Cargo.lock contract service operator cli images hack/images.sh hack/store-images.sh hack/lib.sh"
VERSION=$(workspace_version)

release_env() {
  eval "$("$HACK_DIR/registry.sh" env)" # KEA_REGISTRY: the registry's address on this host
  REGISTRY_PATH=$(awk '/^  repository:/ {print $2; exit}' "$REPO_ROOT/charts/kea-operator/values.yaml")
  REGISTRY_PATH=${REGISTRY_PATH%/*} # ghcr.io/kea-dev
  CHART_REF="oci://$KEA_REGISTRY/${REGISTRY_PATH#*/}/charts/kea-operator"
  export KEA_RELEASE_REGISTRY=$REGISTRY_PATH KEA_RELEASE_PUSH_TO=$KEA_REGISTRY/${REGISTRY_PATH#*/}
  export KEA_RELEASE_PLAIN_HTTP=1 COSIGN_PASSWORD="" COSIGN_KEY="$RELEASE_WORK/key/cosign.key"
  COSIGN_PUB="$RELEASE_WORK/key/cosign.pub"
}

# The registry, the nodes' mirror of the release's host, and a signing key of the tests.
release_registry() {
  # Each step's failure ends the step: errexit does not hold inside `timed ... || rc=$?`.
  "$HACK_DIR/registry.sh" start || return 1
  "$HACK_DIR/registry.sh" mirror "${REGISTRY_PATH%%/*}" || return 1
  if [ ! -f "$COSIGN_KEY" ]; then
    mkdir -p "$(dirname "$COSIGN_KEY")"
    (cd "$(dirname "$COSIGN_KEY")" && cosign generate-key-pair >/dev/null 2>&1) || die "cosign generate-key-pair failed"
  fi
}

# hack/release.sh refuses a version that is not the tree's, and one without a CHANGELOG entry,
# before it builds or pushes anything.
release_refusals() {
  local tree
  tree=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$tree'" RETURN
  printf '[workspace.package]\nversion = "9.9.9"\n' >"$tree/Cargo.toml"
  printf '# Changelog\n\n## [9.9.8] - 2026-01-01\n- An older one.\n' >"$tree/CHANGELOG.md"
  if KEA_RELEASE_SOURCE=$tree KEA_RELEASE_OUT="$tree/out" "$HACK_DIR/release.sh" 9.9.9 2>"$tree/log"; then
    die "hack/release.sh released 9.9.9 without a CHANGELOG entry"
  fi
  grep -q "CHANGELOG.md has no entry for 9.9.9" "$tree/log" || die "unexpected refusal: $(cat "$tree/log")"
  if KEA_RELEASE_SOURCE=$tree KEA_RELEASE_OUT="$tree/out" "$HACK_DIR/release.sh" 9.9.8 2>"$tree/log"; then
    die "hack/release.sh released 9.9.8 from a tree of version 9.9.9"
  fi
  grep -q "is version 9.9.9 .*, not 9.9.8" "$tree/log" || die "unexpected refusal: $(cat "$tree/log")"
  [ ! -e "$tree/out/kea.yaml" ] || die "a refused release wrote kea.yaml"
}

# The previous commit, released by this tree's hack/release.sh in one go, installed as a user
# would.
install_previous() {
  local source="$RELEASE_WORK/previous-source" previous
  git -C "$REPO_ROOT" worktree remove --force "$source" >/dev/null 2>&1 || rm -rf "$source"
  git -C "$REPO_ROOT" worktree prune
  # A shallow clone (a CI checkout) has no HEAD~1 yet: one commit more from its origin.
  git -C "$REPO_ROOT" rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null ||
    git -C "$REPO_ROOT" fetch -q --deepen=1 origin >/dev/null 2>&1 || true
  git -C "$REPO_ROOT" worktree add --detach "$source" HEAD~1 >/dev/null 2>&1 ||
    die "no previous commit to upgrade from (git worktree add HEAD~1; a shallow clone needs a depth of 2)"
  previous=$(workspace_version "$source")
  # The images of the same inputs are the same images: built once, by this tree.
  local images_from=$source
  # shellcheck disable=SC2086 # a list of paths
  if git -C "$REPO_ROOT" diff --quiet HEAD~1 -- $IMAGE_INPUTS; then
    images_from=$REPO_ROOT
    log "the previous commit's image inputs are this one's: its images are built from this tree"
  fi
  KEA_RELEASE_SOURCE=$source KEA_RELEASE_IMAGES_FROM=$images_from KEA_RELEASE_OUT="$RELEASE_WORK/previous" \
    "$HACK_DIR/release.sh" "$previous" || return 1
  git -C "$REPO_ROOT" worktree remove --force "$source"
  log "installing the previous release $previous (HEAD~1) from $CHART_REF"
  helm install "$RELEASE" "$CHART_REF" --version "$previous" -n "$OPERATOR_NS" --create-namespace \
    --plain-http --wait --timeout "$WAIT" >/dev/null || return 1
  wait_operator "$OPERATOR_NS" "$WAIT"
  deploy_examples "$WAIT" "$RELEASE_WORK/previous/kea-examples.yaml"
}

# helm upgrade to this release while requests flow (e2e/tests/e2e/release.rs).
upgrade_under_load() {
  # In the two stages of the release workflow (one platform here): an index per image.
  rm -rf "$REPO_ROOT/dist/$VERSION"
  KEA_RELEASE_STAGE=images "$HACK_DIR/release.sh" "$VERSION" || return 1
  KEA_RELEASE_STAGE=publish KEA_RELEASE_PLATFORMS=$(docker version -f '{{.Server.Arch}}') \
    "$HACK_DIR/release.sh" "$VERSION" || return 1
  local operator_digest
  operator_digest=$(sed -n 's/^KEA_OPERATOR_DIGEST=//p' "$REPO_ROOT/dist/$VERSION/digests.env")
  KEA_E2E_UPGRADE="helm upgrade $RELEASE $CHART_REF --version $VERSION -n $OPERATOR_NS --plain-http --wait --timeout $WAIT" \
    KEA_E2E_RELEASE_CRD="$REPO_ROOT/deploy/00-crd.yaml" \
    KEA_E2E_RELEASE_OPERATOR_IMAGE="$REGISTRY_PATH/kea-operator:$VERSION@$operator_digest" \
    suite --test-threads=1 release::
}

# Everything of a release installation, and the released images on the nodes: the next
# installation pulls them again.
uninstall_release() {
  local node
  kubectl delete namespace kea-demo --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null || return 1
  helm uninstall "$RELEASE" -n "$OPERATOR_NS" --wait --timeout "$WAIT" >/dev/null 2>&1 || true
  kubectl delete -f "$REPO_ROOT/dist/$VERSION/kea.yaml" --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null 2>&1 || true
  kubectl delete crd microservices.kea.dev --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null || return 1
  kubectl delete namespace "$OPERATOR_NS" --ignore-not-found --wait=true --timeout="$WAIT" >/dev/null || return 1
  for node in $(kind get nodes --name "$KEA_KIND_CLUSTER"); do
    # By name (ctr), not by image ID (crictl rmi): an image of the same content under another
    # name (kea.dev/kea-service:dev) shares the ID, and crictl lists one name per ID.
    docker exec "$node" sh -c "ctr -n k8s.io images ls -q | grep '^$REGISTRY_PATH/' | xargs -r ctr -n k8s.io images rm" >/dev/null ||
      return 1
  done
}

# cosign verify passes for the released images and chart, with their SBOM attestations, and
# fails for an image re-tagged in their place (same content, another digest).
check_signatures() {
  local name verify=(cosign verify --key "$COSIGN_PUB" --insecure-ignore-tlog=true --allow-http-registry)
  for name in kea-operator kea-service kea-mariadb kea-redis charts/kea-operator; do
    "${verify[@]}" "$KEA_RELEASE_PUSH_TO/$name:$VERSION" >/dev/null 2>&1 ||
      die "cosign verify $KEA_RELEASE_PUSH_TO/$name:$VERSION failed"
  done
  for name in kea-operator kea-service kea-mariadb kea-redis; do
    cosign verify-attestation --key "$COSIGN_PUB" --insecure-ignore-tlog=true --allow-http-registry \
      --type spdxjson "$KEA_RELEASE_PUSH_TO/$name:$VERSION" >/dev/null 2>&1 ||
      die "cosign verify-attestation (SBOM) of $name failed"
  done
  local tampered="$KEA_RELEASE_PUSH_TO/kea-operator:$VERSION-tampered"
  printf 'FROM kea.dev/kea-operator:%s\nLABEL tampered=true\n' "$VERSION" |
    DOCKER_BUILDKIT=0 docker build -q -t "$tampered" - >/dev/null || return 1
  docker push -q "$tampered" >/dev/null || return 1
  if "${verify[@]}" "$tampered" >/dev/null 2>&1; then die "cosign verify accepted $tampered, which nobody signed"; fi
  log "signatures: images, SBOM attestations and chart verified; the re-tagged image refused"
}

# pulled NAME...: each released image was pulled by a kubelet since the namespaces were made.
pulled() {
  local name events
  events=$(kubectl get events -A --field-selector reason=Pulled -o jsonpath='{range .items[*]}{.message}{"\n"}{end}')
  for name in "$@"; do
    grep -q "Successfully pulled image \"$REGISTRY_PATH/$name:$VERSION@sha256:" <<<"$events" ||
      die "no kubelet pulled $REGISTRY_PATH/$name:$VERSION (events: $(grep -c . <<<"$events") Pulled)"
  done
  grep "Successfully pulled image \"$REGISTRY_PATH/" <<<"$events" | sed 's/^/  /' >&2
}

# The README's two paths, word for word but for the registry's address and --plain-http.
fresh_helm() {
  helm install "$RELEASE" "$CHART_REF" --version "$VERSION" -n "$OPERATOR_NS" --create-namespace \
    --plain-http --wait --timeout "$WAIT" >/dev/null || return 1
  wait_operator "$OPERATOR_NS" "$WAIT"
  deploy_examples "$WAIT" "$REPO_ROOT/dist/$VERSION/kea-examples.yaml"
  pulled kea-operator kea-service kea-mariadb kea-redis
}
fresh_kubectl() {
  kubectl apply -f "$REPO_ROOT/dist/$VERSION/kea.yaml" >/dev/null || return 1
  wait_operator "$OPERATOR_NS" "$WAIT"
  deploy_examples "$WAIT" "$REPO_ROOT/dist/$VERSION/kea-examples.yaml"
  pulled kea-operator kea-service kea-mariadb kea-redis
}

release_mode() {
  local rc=0
  release_env
  timed "[release] registry, ghcr.io mirrored on the nodes" release_registry || return 1
  # Nothing of an earlier release run: every kea image must be pulled afresh.
  timed "[release] clean slate" uninstall_release || rc=$?
  timed "[release] refusals (wrong version, no CHANGELOG entry)" release_refusals || rc=$?
  [ $rc = 0 ] && { timed "[release] previous commit released, helm install from the registry" install_previous || rc=$?; }
  [ $rc = 0 ] && { timed "[release] release $VERSION, helm upgrade under load" upgrade_under_load || rc=$?; }
  timed "[release] uninstall" uninstall_release || rc=$?
  [ $rc = 0 ] && { timed "[release] cosign verify" check_signatures || rc=$?; }
  [ $rc = 0 ] && { timed "[release] helm install $VERSION, all Ready (pulled)" fresh_helm || rc=$?; }
  timed "[release] uninstall" uninstall_release || rc=$?
  [ $rc = 0 ] && { timed "[release] kubectl apply kea.yaml, all Ready (pulled)" fresh_kubectl || rc=$?; }
  if [ "${KEA_E2E_KEEP:-0}" = 1 ]; then
    log "KEA_E2E_KEEP=1: leaving the release installation and the registry in place"
  else
    timed "[release] uninstall" uninstall_release || rc=$?
    "$HACK_DIR/registry.sh" unmirror "${REGISTRY_PATH%%/*}" || true
    "$HACK_DIR/registry.sh" stop || true
  fi
  return $rc
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
    release)
      timed "cluster up" cluster_up || { timed_summary; exit 1; }
      release_mode || rc=$?
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
      release_mode || rc=$?
      timed "cluster down" "$HACK_DIR/kind.sh" down || true
      ;;
    *) die "usage: $0 [kubectl|helm|release|all]" ;;
  esac
  TIMED_LINES+=("$(printf '%-50s %s' total "$(seconds_since "$start")")")
  timed_summary
  if [ $rc = 0 ]; then log "e2e ($what) passed"; else log "e2e ($what) FAILED"; fi
  return $rc
}

main "$@"
