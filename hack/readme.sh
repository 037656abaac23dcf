#!/usr/bin/env bash
# Runs the README's two commands as a new user would, in the order that once broke them:
#
#   hack/demo.sh; hack/test.sh; hack/demo.sh; hack/demo.sh down
#
# The commands are read from the README's first `sh` block (so the README cannot drift from
# what is tested). Checks, besides each command's exit status: the test run leaves the demo's
# kind cluster alone (it uses a cluster of its own), the second demo reuses the first one's
# cluster and answers again, and `hack/demo.sh down` deletes the cluster. `.ci/run` runs this.
#
#   hack/readme.sh
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT" || exit
toolchain_path

# The commands of the README's first ```sh block, comments and blank lines left out.
mapfile -t COMMANDS < <(awk '/^```sh$/ && !seen { inside = 1; seen = 1; next }
  inside && /^```/ { exit }
  inside { sub(/[ \t]*#.*/, ""); if ($0 != "") print }' README.md)
[ "${#COMMANDS[@]}" -eq 2 ] || die "expected the README's first sh block to hold two commands, found: ${COMMANDS[*]:-none}"
DEMO=${COMMANDS[0]}
TEST=${COMMANDS[1]}
if [ "$DEMO" != hack/demo.sh ] || [ "$TEST" != hack/test.sh ]; then
  die "the README's commands are now '$DEMO' and '$TEST': update this check with them"
fi

DEMO_CLUSTER=kea
demo_cluster_id() {
  docker inspect -f '{{.Id}}' "$DEMO_CLUSTER-control-plane" 2>/dev/null
}

step() {
  timed "README: $*" "$@" || die "'$*' failed (exit $?), run as the README says"
}

docker_was_running=false
hack/docker.sh status >/dev/null 2>&1 && docker_was_running=true
finish() {
  local rc=$?
  # Never leave the demo or a Docker engine of ours behind, whatever failed.
  if [ -n "$(demo_cluster_id)" ]; then hack/demo.sh down >/dev/null 2>&1 || true; fi
  $docker_was_running || hack/docker.sh stop >/dev/null 2>&1 || log "stopping dockerd failed"
  exit "$rc"
}
trap finish EXIT

step "$DEMO"
first=$(demo_cluster_id) || die "no kind cluster '$DEMO_CLUSTER' after $DEMO"

step "$TEST"
[ "$(demo_cluster_id)" = "$first" ] ||
  die "$TEST deleted or replaced the demo's cluster '$DEMO_CLUSTER': tests must use a cluster of their own"

step "$DEMO"
[ "$(demo_cluster_id)" = "$first" ] || die "the second $DEMO did not reuse the demo's cluster"

step "$DEMO" down
[ -z "$(demo_cluster_id)" ] || die "'$DEMO down' left the cluster '$DEMO_CLUSTER' behind"
timed_summary
log "README commands passed in order in ${SECONDS}s"
