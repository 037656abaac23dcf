#!/usr/bin/env bash
# Builds the pinned Kubernetes toolchain (hack/versions.env) from the Go module
# proxy into $KEA_CACHE_DIR/toolchain/<tool>-<version>/. Idempotent: a tool whose
# binary is already cached is skipped, so a second run does nothing.
#
#   hack/toolchain.sh [TARGET...]          # build the tools of the targets (default: all)
#   hack/toolchain.sh missing [TARGET...]  # print those not built yet: "NAME VERSION MINUTES"
#                                          # a line (a cold build's minutes on 2 busy cores)
#   hack/toolchain.sh path                 # print the PATH entries of the cached tools
#
# Targets:
#   control-plane   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
#                   (hack/control-plane.sh)
#   kind            what a kind cluster of hack/kind.sh needs: the control plane's binaries
#                   but kwok, kubelet, kube-proxy, kubeadm, kind, crictl, coredns,
#                   local-path-provisioner (the default StorageClass) and the add-ons
#   addons          kube-router, metrics-server (the kind cluster's pod network and
#                   NetworkPolicy, resource metrics)
#   helm            helm
#   s3              versitygw (an S3-compatible server: the backup tests' bucket)
#   release         registry (distribution: an OCI registry for the release tier), cosign
#                   (signs and verifies the released images and chart)
#   all             all of the above
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ADDONS=(kube-router metrics-server)
declare -A TARGETS=(
  [control-plane]="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok"
  [kind]="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
    kubeadm kind crictl coredns local-path-provisioner ${ADDONS[*]}"
  [addons]="${ADDONS[*]}"
  [helm]=helm
  [s3]=versitygw
  [release]="registry cosign"
)
# About how long a cold build of each tool takes on 2 cores busy with other builds: the
# control-plane set 27 min, the kind set on top of it 45 min, each add-on 10 min.
declare -A MINUTES=(
  [etcd]=3 [kube-apiserver]=12 [kube-controller-manager]=5 [kube-scheduler]=2 [kubectl]=2 [kwok]=3
  [kubelet]=15 [kube-proxy]=8 [kubeadm]=8 [kind]=3 [crictl]=4 [coredns]=7
  [local-path-provisioner]=3 [kube-router]=10 [metrics-server]=10 [helm]=6 [versitygw]=6
  [registry]=4 [cosign]=15
)
# go_install's package and -X flags for the tools built as published.
declare -A PACKAGES=(
  [kwok]="sigs.k8s.io/kwok/cmd/kwok -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  [kind]="sigs.k8s.io/kind"
  [crictl]="sigs.k8s.io/cri-tools/cmd/crictl -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  [coredns]="github.com/coredns/coredns"
  [local-path-provisioner]="github.com/rancher/local-path-provisioner -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
  [kube-router]="github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
    -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
  [metrics-server]="sigs.k8s.io/metrics-server/cmd/metrics-server
    -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
  [helm]="helm.sh/helm/v3/cmd/helm -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  [versitygw]="github.com/versity/versitygw/cmd/versitygw -X main.Version=$VERSITYGW_VERSION"
  [registry]="github.com/distribution/distribution/v3/cmd/registry
    -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
  [cosign]="github.com/sigstore/cosign/v3/cmd/cosign -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"
)

# tools TARGET...: the tools of the targets, each once.
tools() {
  local target
  for target in "$@"; do
    # shellcheck disable=SC2086 # a list of words
    if [ "$target" = all ]; then tools control-plane helm kind s3 release; else printf '%s\n' ${TARGETS[$target]}; fi
  done | awk '!seen[$0]++'
}

cached() { [ -f "$(tool_bin "$1")" ] && [ -x "$(tool_bin "$1")" ]; }

# missing TARGET...: "NAME VERSION MINUTES" of each tool of the targets not cached yet.
missing() {
  local name
  for name in $(tools "$@"); do
    cached "$name" || echo "$name $(tool_version "$name") ${MINUTES[$name]}"
  done
}

# install_binary NAME BUILT_FILE: move a built binary into the cache.
install_binary() {
  local bin
  bin=$(tool_bin "$1")
  mkdir -p "$(dirname "$bin")"
  mv "$2" "$bin.tmp" && mv "$bin.tmp" "$bin"
  log "cached $1 $(tool_version "$1") ($(size_of "$bin"))"
}

# Kubernetes pins its staging modules at v0.0.0 with local replaces, so a plain
# `go install` fails; build from a wrapper module that replaces each of them
# with its published v0.<minor>.<patch> release, as read from kubernetes' go.mod.
build_kubernetes() {
  [ $# -gt 0 ] || return 0
  log "building Kubernetes $KUBERNETES_VERSION: $* (cold: tens of minutes on 2 cores)"
  local mod="$WORK/kubernetes" gomod name minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  mkdir -p "$mod" && cd "$mod"
  gomod=$(go_module "k8s.io/kubernetes@$KUBERNETES_VERSION" GoMod)
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  {
    echo "module kea.dev/toolchain/kubernetes"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print "replace " $1 " => " $1 " v0.'"${KUBERNETES_VERSION#v1.}"'"}' "$gomod"
  } > go.mod
  local ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for name in "$@"; do
    timed "go build k8s.io/kubernetes/cmd/$name" \
      go build -mod=mod -ldflags "$ldflags" -o "$WORK/$name" "k8s.io/kubernetes/cmd/$name"
    install_binary "$name" "$WORK/$name"
  done
  cd - >/dev/null
}

build_etcd() {
  local mod="$WORK/etcd"
  mkdir -p "$mod" && cd "$mod"
  go mod init kea.dev/toolchain/etcd >/dev/null 2>&1
  run_logged "$WORK/etcd-get.log" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  # Not "$WORK/etcd": that is the module's directory, and -o into a directory
  # writes the binary inside it (named "server").
  timed "building etcd $ETCD_VERSION" go build -ldflags "-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3
  install_binary etcd "$WORK/etcd-bin"
  cd - >/dev/null
}

# go_install NAME: for modules that `go install` builds as published (PACKAGES).
go_install() {
  local words version
  version=$(tool_version "$1")
  read -r -d '' -a words <<<"${PACKAGES[$1]}" || true
  timed "building $1 $version" env GOBIN="$WORK/bin-$1" \
    go install -ldflags "-s -w ${words[*]:1}" "${words[0]}@$version"
  install_binary "$1" "$WORK/bin-$1/$(basename "${words[0]}")"
}

# build TARGET...: every missing tool of the targets, Kubernetes' own binaries together.
build() {
  local name kubernetes=() start=$EPOCHREALTIME
  require_cmd go "install Go (Debian: golang-go, or the machine's /usr/local/go)"
  export CGO_ENABLED=0 GOFLAGS=-trimpath
  # Builds run in throwaway wrapper modules; Go keeps its caches between runs.
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  for name in $(missing "$@" | cut -d' ' -f1); do
    if [ "$name" = etcd ]; then
      build_etcd
    elif [ -n "${PACKAGES[$name]:-}" ]; then
      go_install "$name"
    else # a command of k8s.io/kubernetes
      kubernetes+=("$name")
    fi
  done
  build_kubernetes "${kubernetes[@]}"
  log "toolchain ready in $TOOLCHAIN_DIR ($(seconds_since "$start"), $(size_of "$TOOLCHAIN_DIR"))"
}

command=build
case "${1:-}" in
  -h | --help) help_text; exit 0 ;;
  path) for d in "$TOOLCHAIN_DIR"/*/; do if [ -d "$d" ]; then echo "${d%/}"; fi; done; exit 0 ;;
  missing) command=missing; shift ;;
esac
[ $# -gt 0 ] || set -- all
for target in "$@"; do
  [ "$target" = all ] || [ -n "${TARGETS[$target]:-}" ] ||
    die "unknown target '$target': use ${!TARGETS[*]}, all, missing or path (--help)"
done
"$command" "$@"
