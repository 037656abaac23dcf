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

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# tool_bin NAME VERSION: the cached path of a built binary.
tool_bin() { echo "$TOOLCHAIN_DIR/$1-$2/$1"; }

# Put every built tool on PATH (cached binaries only; nothing is built here).
toolchain_path() {
  local d
  for d in "$TOOLCHAIN_DIR"/*/; do
    [ -d "$d" ] && PATH="${d%/}:$PATH"
  done
  export PATH
}

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
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

# kind_kubeconfig CLUSTER: where hack/kind.sh keeps the kubeconfig of a kind cluster: the
# demo's cluster "kea" in $KEA_CACHE_DIR/kind/kubeconfig, any other next to it.
kind_kubeconfig() {
  if [ "$1" = kea ]; then echo "$KEA_CACHE_DIR/kind/kubeconfig"; else echo "$KEA_CACHE_DIR/kind/kubeconfig-$1"; fi
}
