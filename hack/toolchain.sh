#!/usr/bin/env bash
# Builds the pinned Kubernetes toolchain (hack/versions.env) from the Go module
# proxy into $KEA_CACHE_DIR/toolchain/<tool>-<version>/. Idempotent: a tool whose
# binary is already cached is skipped, so a second run does nothing.
#
#   hack/toolchain.sh                 # everything
#   hack/toolchain.sh control-plane   # etcd, apiserver, controller-manager, scheduler, kubectl, kwok
#   hack/toolchain.sh kind            # what a kind cluster needs on top (kubelet, kubeadm, kind,
#                                     # crictl, coredns, local-path-provisioner, kube-router,
#                                     # metrics-server)
#   hack/toolchain.sh addons          # just kube-router and metrics-server
#   hack/toolchain.sh helm            # just helm
#   hack/toolchain.sh path            # print the PATH entries of the cached tools
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmd go "install Go (Debian: golang-go, or the machine's /usr/local/go)"
export CGO_ENABLED=0 GOFLAGS=-trimpath
# Builds run in throwaway wrapper modules; keep Go's caches between runs.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

kube_minor=${KUBERNETES_VERSION#v1.}; kube_minor=${kube_minor%%.*}
staging_version="v0.${KUBERNETES_VERSION#v1.}"

cached() { [ -f "$(tool_bin "$1" "$2")" ] && [ -x "$(tool_bin "$1" "$2")" ]; }

# install_binary NAME VERSION BUILT_FILE: move a built binary into the cache.
install_binary() {
  local dir="$TOOLCHAIN_DIR/$1-$2"
  mkdir -p "$dir"
  mv "$3" "$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"
  log "cached $1 $2 ($(du -h "$dir/$1" | cut -f1))"
}

timed() {
  local start=$SECONDS
  "$@"
  log "  took $((SECONDS - start))s"
}

# Kubernetes pins its staging modules at v0.0.0 with local replaces, so a plain
# `go install` fails; build from a wrapper module that replaces each of them
# with its published v0.<minor>.<patch> release, as read from kubernetes' go.mod.
build_kubernetes() {
  local wanted=() name
  for name in "$@"; do cached "$name" "$KUBERNETES_VERSION" || wanted+=("$name"); done
  [ ${#wanted[@]} -eq 0 ] && return 0
  log "building Kubernetes $KUBERNETES_VERSION: ${wanted[*]} (cold: tens of minutes on 2 cores)"
  local mod="$WORK/kubernetes"
  mkdir -p "$mod" && cd "$mod"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
  {
    echo "module kea.dev/toolchain/kubernetes"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print "replace " $1 " => " $1 " '"$staging_version"'"}' "$gomod"
  } > go.mod
  local ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$kube_minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor"
  for name in "${wanted[@]}"; do
    log "  go build k8s.io/kubernetes/cmd/$name"
    timed go build -mod=mod -ldflags "$ldflags" -o "$WORK/$name" "k8s.io/kubernetes/cmd/$name"
    install_binary "$name" "$KUBERNETES_VERSION" "$WORK/$name"
  done
  cd - >/dev/null
}

build_etcd() {
  cached etcd "$ETCD_VERSION" && return 0
  log "building etcd $ETCD_VERSION"
  local mod="$WORK/etcd"
  mkdir -p "$mod" && cd "$mod"
  go mod init kea.dev/toolchain/etcd >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  # Not "$WORK/etcd": that is the module's directory, and -o into a directory
  # writes the binary inside it (named "server").
  timed go build -ldflags "-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3
  install_binary etcd "$ETCD_VERSION" "$WORK/etcd-bin"
  cd - >/dev/null
}

# go_install NAME VERSION PACKAGE@VERSION: for modules that `go install` builds as published.
go_install() {
  cached "$1" "$2" && return 0
  log "building $1 $2"
  timed env GOBIN="$WORK/bin-$1" go install -ldflags "${4:--s -w}" "$3"
  install_binary "$1" "$2" "$WORK/bin-$1/$(basename "${3%@*}")"
}

control_plane() {
  build_etcd
  build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
  go_install kwok "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}

kind_tools() {
  build_kubernetes kubelet kube-proxy kubeadm kubectl
  go_install kind "$KIND_VERSION" "sigs.k8s.io/kind@$KIND_VERSION"
  go_install crictl "$CRICTL_VERSION" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
  # The default StorageClass of the offline node image (hack/kind/default-storage.yaml).
  go_install local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION" \
    "-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
  addons
}

# The offline kind cluster's add-ons (hack/kind/kube-router.yaml, hack/kind/metrics-server.yaml).
addons() {
  go_install kube-router "$KUBE_ROUTER_VERSION" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" \
    "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
  go_install metrics-server "$METRICS_SERVER_VERSION" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" \
    "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
}

helm_tool() {
  go_install helm "$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

start=$SECONDS
case "${1:-all}" in
  control-plane) control_plane ;;
  kind) kind_tools ;;
  helm) helm_tool ;;
  addons) addons ;;
  all) control_plane; helm_tool; kind_tools ;;
  path) for d in "$TOOLCHAIN_DIR"/*/; do echo "${d%/}"; done; exit 0 ;;
  *) die "unknown target '$1': use control-plane, kind, addons, helm, all or path" ;;
esac
log "toolchain ready in $TOOLCHAIN_DIR ($((SECONDS - start))s, $(du -sh "$TOOLCHAIN_DIR" | cut -f1))"
