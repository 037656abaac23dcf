# shellcheck shell=bash
# Shared helpers for the hack/ scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

# The toolchain cache lives outside the checkout so fresh clones reuse it.
KEA_CACHE_DIR=${KEA_CACHE_DIR:-$HOME/.cache/kea}
TOOLCHAIN_DIR="$KEA_CACHE_DIR/toolchain"
# Where the local control plane keeps its state, certificates and logs.
KEA_RUN_DIR=${KEA_RUN_DIR:-$KEA_CACHE_DIR/run}
# The Debian release the node and store images are built from (this machine's too).
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${KEA_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# help_text: the header comment of the running hack/ script, its --help.
help_text() { sed -n '2,/^# shellcheck/{/^# shellcheck/d; s/^# \{0,1\}//p}' "$HACK_DIR/${0##*/}"; }

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

# --- steps ------------------------------------------------------------------------

# seconds_since START: the seconds since START (a value of $EPOCHREALTIME), with one decimal.
seconds_since() {
  local tenths=$(((${EPOCHREALTIME//[!0-9]/} - ${1//[!0-9]/}) / 100000))
  echo "$((tenths / 10)).$((tenths % 10))s"
}

# timed LABEL COMMAND...: runs COMMAND as a named step: "== LABEL" before, "== LABEL: ok
# (Ns)" or "== LABEL: FAILED (exit N, Ns)" after, kept for timed_summary; returns its status.
# Under `set -e` (not in an `if` or `||`) a failing COMMAND ends the script at once, and
# $TIMED_STEP names the step for the EXIT trap.
TIMED_STEP=
TIMED_LINES=()
timed() {
  local label=$1 outer=$TIMED_STEP start=$EPOCHREALTIME rc result
  shift
  log "== $label"
  TIMED_STEP=$label
  "$@"
  rc=$?
  TIMED_STEP=$outer
  if [ $rc = 0 ]; then result="ok ($(seconds_since "$start"))"; else result="FAILED (exit $rc, $(seconds_since "$start"))"; fi
  log "== $label: $result"
  TIMED_LINES+=("$(printf '%-50s %s' "$label" "$result")")
  return $rc
}

# timed_summary: every step timed ran, with its result and wall time.
timed_summary() {
  local line
  [ ${#TIMED_LINES[@]} -gt 0 ] || return 0
  log "wall times:"
  for line in "${TIMED_LINES[@]}"; do log "  $line"; done
}

# retry SECONDS COMMAND...: runs COMMAND until it succeeds, every 0.2 s; fails when it has
# not within SECONDS.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# run_logged LOG COMMAND...: runs COMMAND with its output in LOG; when it fails, shows the
# end of LOG and dies.
run_logged() {
  local file=$1
  shift
  "$@" >"$file" 2>&1 && return 0
  tail -n 20 "$file" >&2
  die "${*:1:2} failed (log: $file)"
}

# cargo_target_dir: where cargo puts the workspace's builds.
cargo_target_dir() {
  (cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps) |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# --- caches -----------------------------------------------------------------------

# tool_version NAME: the pinned version of a tool of hack/toolchain.sh: KUBERNETES_VERSION
# for Kubernetes' own commands, else NAME_VERSION of hack/versions.env (kube-router:
# KUBE_ROUTER_VERSION).
tool_version() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | kubelet | kubeadm | kubectl)
      echo "$KUBERNETES_VERSION" ;;
    *) local var=${1^^}; var=${var//-/_}_VERSION; echo "${!var:?no $var in hack/versions.env}" ;;
  esac
}

# tool_bin NAME: the cached path of a built binary.
tool_bin() {
  local version
  version=$(tool_version "$1") && echo "$TOOLCHAIN_DIR/$1-$version/$1"
}

# Put every built tool on PATH (cached binaries only; nothing is built here).
toolchain_path() {
  local d
  for d in "$TOOLCHAIN_DIR"/*/; do
    [ -d "$d" ] && PATH="${d%/}:$PATH"
  done
  export PATH
}

# cache_key: a short key of what is on stdin: the inputs of a cached artifact (versions,
# the text of its recipe's functions from `declare -f`, the files it takes).
cache_key() { sha256sum | cut -c1-12; }

size_of() { du -sh "$1" | cut -f1; }

require_docker() {
  require_cmd docker "start the engine with hack/docker.sh start"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start it with hack/docker.sh start"
}

# image_inputs IMAGE: the key of what a local image was built from (its dev.kea.inputs label).
image_inputs() { docker image inspect "$1" --format '{{index .Config.Labels "dev.kea.inputs"}}' 2>/dev/null; }

# image_size IMAGE: the size of a docker image, in MB.
image_size() { docker image inspect "$1" --format '{{.Size}}' | awk '{printf "%.1f MB", $1 / 1e6}'; }

# cached_artifact LABEL PATH BUILD [ARG...]: PATH, a file named NAME-KEY[.EXT] after the
# inputs it is built from, is built unless it exists: `BUILD PATH.tmp ARG...` writes it and
# it is renamed into place, then the artifacts of other keys (NAME-*) are deleted.
cached_artifact() {
  local label=$1 path=$2 start=$EPOCHREALTIME name
  shift 2
  if [ -e "$path" ]; then
    log "$label cached: $path ($(size_of "$path"))"
    return 0
  fi
  mkdir -p "$(dirname "$path")"
  rm -rf "$path.tmp"
  timed "building $label" "$1" "$path.tmp" "${@:2}"
  mv "$path.tmp" "$path"
  name=$(basename "$path")
  find "$(dirname "$path")" -mindepth 1 -maxdepth 1 -name "${name%-*}-*" ! -path "$path" -exec rm -rf {} +
  log "$label ready: $path ($(size_of "$path"), $(seconds_since "$start"))"
}

# go_module MODULE@VERSION FIELD: a field of `go mod download -json` (Dir: the module's
# source, GoMod: its go.mod), downloading the module from the Go module proxy if needed.
go_module() {
  (cd /tmp && go mod download -json "$1") | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p"
}

# apt_install PACKAGE...: installs Debian packages that are missing (updates the lists once).
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps packaged servers from starting system-wide.
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# debootstrap_minbase ROOT [OPTION...]: a minimal Debian $DEBIAN_SUITE in the (emptied)
# folder ROOT; debootstrap's output goes to debootstrap.log beside it.
debootstrap_minbase() {
  local root=$1
  shift
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  apt_install debootstrap
  rm -rf "$root" && mkdir -p "$root"
  run_logged "$(dirname "$root")/debootstrap.log" \
    debootstrap --variant=minbase "$@" "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR"
}

# tar_rootfs ROOT TARBALL: the folder ROOT as a tarball (numeric owners), then deleted.
tar_rootfs() {
  tar -C "$1" --numeric-owner -cf "$2" .
  rm -rf "$1"
}

# --- processes --------------------------------------------------------------------

# process_running PID: whether PID is a live process (a zombie, killed but not yet reaped by
# its parent, counts as gone).
process_running() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# pid_in_file FILE [BINARY]: prints the pid FILE holds if that process runs (and runs
# BINARY: a path or a file name), else fails; guards against a stale file or a reused pid.
pid_in_file() {
  local pid exe
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && process_running "$pid" || return 1
  if [ -n "${2:-}" ]; then
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "$exe" = "$2" ] || [ "${exe##*/}" = "$2" ] || return 1
  fi
  echo "$pid"
}

# command_line PID: the start of a process's command line, for logs.
command_line() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | cut -c1-80; }

# processes_using DIR BINARY_GLOB...: the pids of the processes running a binary whose path
# matches one of the globs with something under DIR on their command line: what a run left
# behind when its pid files were lost. Nothing else matches both.
processes_using() {
  local dir=$1 proc exe argv0 glob
  shift
  for proc in /proc/[0-9]*; do
    exe=$(readlink "$proc/exe" 2>/dev/null) || continue
    # The path it was started from counts too: a binary replaced since shows as "(deleted)".
    argv0=$(tr '\0' '\n' <"$proc/cmdline" 2>/dev/null | head -n 1) || true
    for glob in "$@"; do
      # shellcheck disable=SC2053 # a glob
      if [[ $exe == $glob || $argv0 == $glob ]] && tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
        echo "${proc#/proc/}"
        break
      fi
    done
  done
}

# stop_processes GRACE_SECONDS PID...: SIGTERM each process, SIGKILL those still running
# after the grace period; fails, naming them, if any survives that.
stop_processes() {
  local grace=$1 pid alive=() i
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for ((i = 0; i <= grace * 10 + 20; i++)); do
    alive=()
    for pid in "$@"; do process_running "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    if [ "$i" -eq $((grace * 10)) ]; then
      log "still running ${grace}s after SIGTERM, killing: ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    sleep 0.1
  done
  log "error: still running after SIGKILL: ${alive[*]}"
  return 1
}

# --- clusters ---------------------------------------------------------------------

# kind_kubeconfig CLUSTER: where hack/kind.sh keeps the kubeconfig of a kind cluster: the
# demo's cluster "kea" in $KEA_CACHE_DIR/kind/kubeconfig, any other next to it.
kind_kubeconfig() {
  if [ "$1" = kea ]; then echo "$KEA_CACHE_DIR/kind/kubeconfig"; else echo "$KEA_CACHE_DIR/kind/kubeconfig-$1"; fi
}

# workspace_version [TREE]: the version of the workspace's crates ([workspace.package] of
# TREE/Cargo.toml, this tree's by default), which the chart and the images carry too.
workspace_version() {
  awk -F'"' '/^\[/ {section = $0} section == "[workspace.package]" && /^version *=/ {print $2; exit}' \
    "${1:-$REPO_ROOT}/Cargo.toml"
}

# Every example Microservice of deploy/examples/.
EXAMPLE_MICROSERVICES=(users orders frontend)

# wait_operator NAMESPACE TIMEOUT: waits until the Microservice CRD is served and the
# operator's Deployment in NAMESPACE has rolled out.
wait_operator() {
  kubectl wait --for=condition=Established crd/microservices.kea.dev --timeout=60s >/dev/null ||
    die "the Microservice CRD is not served: kubectl get crd microservices.kea.dev -o yaml"
  kubectl -n "$1" rollout status deployment/kea-operator --timeout="$2" >/dev/null ||
    die "the operator did not roll out: kubectl -n $1 describe deployment kea-operator"
}

# deploy_operator TIMEOUT: kubectl apply -f deploy/ (CRD, namespace, RBAC, operator), then
# waits until the operator runs.
deploy_operator() {
  log "installing the operator (kubectl apply -f deploy/)"
  kubectl apply -f "$REPO_ROOT/deploy/" >/dev/null || die "kubectl apply -f deploy/ failed"
  wait_operator kea-system "$1"
}

# deploy_examples TIMEOUT [MANIFESTS]: applies deploy/examples/ (or MANIFESTS) and waits until
# each example is Ready and its Deployment rolled out.
deploy_examples() {
  local ms manifests=${2:-$REPO_ROOT/deploy/examples/}
  log "applying the example system ($manifests)"
  kubectl apply -f "$manifests" >/dev/null || die "kubectl apply -f $manifests failed"
  for ms in "${EXAMPLE_MICROSERVICES[@]}"; do
    kubectl -n kea-demo wait --for=jsonpath='{.status.conditions[?(@.type=="Ready")].status}'=True \
      "microservice/$ms" --timeout="$1" >/dev/null ||
      die "Microservice $ms is not Ready: kubectl -n kea-demo describe ms $ms"
    kubectl -n kea-demo rollout status "deployment/$ms" --timeout="$1" >/dev/null ||
      die "Deployment $ms did not roll out: kubectl -n kea-demo describe deployment $ms"
  done
}
