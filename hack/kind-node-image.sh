#!/usr/bin/env bash
# Assembles a kind node image for $KUBERNETES_VERSION without a registry: `kind build
# node-image` pulls images, so this builds the same thing from Debian packages, kind's
# own files (its Go module source) and the binaries hack/toolchain.sh cached.
#
#   hack/kind-node-image.sh            # everything (idempotent; cached steps are skipped)
#   hack/kind-node-image.sh rootfs     # just the debootstrap'd node rootfs tarball
#   hack/kind-node-image.sh images     # just the control-plane, storage and add-on images (docker tarballs)
#   hack/kind-node-image.sh name       # print the node image name
#
# Steps, each cached under $KEA_CACHE_DIR/kind/ and keyed by its recipe and inputs:
#   1. rootfs-bookworm-KEY.tar: debootstrap bookworm + systemd, containerd, runc, iptables,
#      CNI plugins..., plus kind's base files (entrypoint, containerd config, kubelet unit).
#   2. images-$KUBERNETES_VERSION-KEY.tar: kube-apiserver, kube-controller-manager,
#      kube-scheduler, kube-proxy, etcd, coredns, pause, each FROM scratch around the
#      toolchain's binaries (kube-proxy with iptables from the rootfs), tagged exactly as
#      `kubeadm config images list` names them, saved as docker tarballs;
#      storage-images-KEY.tar: the images of the default StorageClass
#      (hack/kind/default-storage.yaml): local-path-provisioner FROM scratch around the
#      toolchain's binary, and its helper from Debian's busybox-static;
#      addon-images-KEY.tar: kube-router (pod network + NetworkPolicy, with iptables, ipset,
#      ip and the CNI plugins from the node rootfs) and metrics-server FROM scratch.
#   3. node: rootfs + kubeadm/kubelet/kubectl, crictl + /kind/version + the tarballs (imported
#      into containerd's k8s.io namespace by kea-preload-images.service at node start,
#      before the kubelet runs) + /kind/manifests/default-storage.yaml and
#      /kind/manifests/default-cni.yaml (hack/kind/kube-router.yaml: kind applies it at
#      cluster creation, in place of kindnet), built as $KEA_KIND_NODE_IMAGE.
#
# Rebuild from scratch: KEA_KIND_REBUILD=1, or delete $KEA_CACHE_DIR/kind.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_CACHE="$KEA_CACHE_DIR/kind"
NODE_IMAGE=${KEA_KIND_NODE_IMAGE:-kea.dev/kind-node:$KUBERNETES_VERSION}
export DOCKER_BUILDKIT=0 # the machine's docker CLI has no buildx

# What the node needs (kind's base image list, minus what it builds from source:
# Debian's containerd/runc/CNI plugins stand in for those).
PACKAGES=(
  systemd systemd-sysv dbus containerd runc containernetworking-plugins
  iptables nftables conntrack iproute2 ethtool socat util-linux mount kmod
  libseccomp2 bash ca-certificates jq procps ipset
)
# The default StorageClass's images: the tags hack/kind/default-storage.yaml names.
PROVISIONER_IMAGE="kea.dev/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
HELPER_IMAGE=kea.dev/local-path-helper:busybox-$DEBIAN_SUITE
# The add-ons: the pod network and NetworkPolicy controller kind installs as its default
# CNI (hack/kind/kube-router.yaml), and metrics-server (hack/kind/metrics-server.yaml,
# applied by hack/kind.sh up).
KUBE_ROUTER_IMAGE="kea.dev/kube-router:$KUBE_ROUTER_VERSION"
METRICS_SERVER_IMAGE="kea.dev/metrics-server:$METRICS_SERVER_VERSION"

# 1. build_rootfs OUT: the node rootfs: debootstrap (slow once, ~5 min) then kind's files
# and settings.
build_rootfs() {
  local root="$1.d" kind_files plugin
  kind_files="$(go_module "sigs.k8s.io/kind@$KIND_VERSION" Dir)/images/base/files"
  [ -d "$kind_files" ] || die "could not fetch sigs.k8s.io/kind@$KIND_VERSION from the Go module proxy"
  timed "debootstrap $DEBIAN_SUITE (${#PACKAGES[@]} packages + dependencies)" \
    debootstrap_minbase "$root" --include="$(IFS=,; echo "${PACKAGES[*]}")"
  log "adding kind $KIND_VERSION base files"
  install -m 0755 "$kind_files"/usr/local/bin/* "$root/usr/local/bin/"
  mkdir -p "$root/kind/bin" "$root/etc/containerd" "$root/etc/systemd/system/kubelet.service.d"
  cp -r "$kind_files/kind/." "$root/kind/"
  chmod 0755 "$root/kind/bin" "$root"/kind/bin/*
  install -m 0644 "$kind_files/etc/crictl.yaml" "$root/etc/"
  install -m 0644 "$kind_files"/etc/containerd/* "$root/etc/containerd/"
  install -m 0644 "$kind_files"/etc/default/* "$root/etc/default/"
  install -m 0644 "$kind_files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  find "$kind_files/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$root/etc/systemd/system/" \;
  install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
  # Debian installs containerd, ctr and the CNI plugins elsewhere than kind's build.
  ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
  ln -sf /usr/bin/ctr "$root/usr/local/bin/ctr"
  mkdir -p "$root/opt/cni/bin"
  for plugin in "$root"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/$(basename "$plugin")" "$root/opt/cni/bin/"; done
  # Local additions (hack/kind/): the image preload unit (the default storage and CNI
  # manifests are added with the node image: they change with the add-ons' versions,
  # which should not cost a debootstrap). No CNI config: kube-router's DaemonSet writes
  # /etc/cni/net.d/10-kuberouter.conflist on each node, and the kubelet reports the node
  # NotReady until it has.
  install -m 0644 "$HACK_DIR/kind/kea-preload-images.service" "$root/etc/systemd/system/"
  install -m 0644 "$HACK_DIR/kind/kubelet-kea.conf" "$root/etc/systemd/system/kubelet.service.d/20-kea.conf"
  mkdir -p "$root/etc/cni/net.d"
  install -m 0755 "$HACK_DIR/kind/preload-images.sh" "$root/kind/bin/preload-images.sh"
  log "configuring systemd and containerd in the rootfs"
  # What kind's base Dockerfile does after installing its packages.
  # shellcheck disable=SC2016 # expanded in the chroot
  chroot "$root" /bin/bash -euc '
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/*
    rm -f /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev*
    rm -f /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    ln -sf "$(command -v systemd)" /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service kea-preload-images.service
    systemctl mask systemd-binfmt.service
    mkdir -p /etc/kubernetes/manifests /kind/images
    # kind sets this in its build: the base runtime spec, with its product-files hook
    ctr oci spec \
      | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/*
  '
  # kind's containerd config, with the pause tag kubeadm expects (kind's names an older
  # one) and container OOM scores clamped to containerd's own: without CAP_SYS_RESOURCE
  # (see hack/runc-drop-cap-sys-resource) runc cannot lower them to the -997 the kubelet
  # asks for critical pods. On normal hosts the clamp changes nothing for kea.
  sed -i -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:$PAUSE_VERSION\"|" \
    -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
  tar_rootfs "$root" "$1"
}

# import_dir DIR TAG [DOCKER_IMPORT_CHANGES...]: a FROM-scratch image from a folder.
import_dir() {
  local dir=$1 tag=$2; shift 2
  local changes=(-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin') change
  for change in "$@"; do changes+=(-c "$change"); done
  tar -C "$dir" --numeric-owner -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  log "  $tag ($(image_size "$tag"))"
}

# scratch_root DIR [ROOT_SHELL]: the start of a FROM-scratch image: an /etc/passwd and
# /etc/group with root and nobody (65534), and a /tmp open to all.
scratch_root() {
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:%s\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' "${2:-/sbin/nologin}" >"$1/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
}

# unpack_rootfs DEST [PATH...]: the node rootfs' programs and libraries (and PATHs) in DEST.
unpack_rootfs() {
  mkdir -p "$1"
  tar -C "$1" -xf "$ROOTFS_TAR" ./usr ./lib ./lib64 ./bin ./sbin "${@:2}" 2>/dev/null || true
}

# copy_with_libs ROOT DEST FILE...: copy FILEs (paths inside ROOT) and the shared
# libraries they load into DEST, keeping their paths.
copy_with_libs() {
  local root=$1 dest=$2 file lib; shift 2
  for file in "$@"; do
    mkdir -p "$dest$(dirname "$file")" && cp -a "$root$file" "$dest$file"
    for lib in $(chroot "$root" ldd "$file" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
      mkdir -p "$dest$(dirname "$lib")" && cp -L "$root$lib" "$dest$lib"
    done
  done
}

# add_iptables ROOTFS DEST: iptables (nft and legacy; plain "iptables" is the nft
# variant, like the node's own), its match/target extensions and their libraries, from
# an unpacked node rootfs.
add_iptables() {
  local rootfs=$1 dest=$2 variant cmd extensions
  copy_with_libs "$rootfs" "$dest" /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi
  # the match/target extensions iptables dlopens, and their own libraries
  mapfile -t extensions < <(cd "$rootfs" && find usr/lib/x86_64-linux-gnu/xtables -name '*.so' -printf '/%p\n')
  copy_with_libs "$rootfs" "$dest" "${extensions[@]}"
  for variant in nft legacy; do
    for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
      ln -sf "xtables-$variant-multi" "$dest/usr/sbin/${cmd/tables/tables-$variant}"
      if [ "$variant" = nft ]; then ln -sf xtables-nft-multi "$dest/usr/sbin/$cmd"; fi
    done
  done
  mkdir -p "$dest/run" "$dest/var/run"
}

# add_busybox DEST [APPLET...]: Debian's busybox-static as DEST/bin/busybox, with a
# symlink per applet (each one it has when none is named); sets BUSYBOX_VERSION to the
# package's version. From the host's apt (this machine is bookworm like the node).
add_busybox() {
  local dest=$1 work deb applet
  shift
  work=$(mktemp -d)
  chmod 0755 "$work" # apt's _apt user downloads into it
  (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1) ||
    { apt-get update -qq && (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1); } ||
    die "apt-get download busybox-static failed"
  deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n 1)
  dpkg-deb -x "$deb" "$work/deb"
  BUSYBOX_VERSION=$(dpkg-deb -f "$deb" Version)
  mkdir -p "$dest/bin"
  cp "$work/deb/bin/busybox" "$dest/bin/busybox"
  rm -rf "$work"
  # shellcheck disable=SC2046 # one applet a word
  [ $# -gt 0 ] || set -- $("$dest/bin/busybox" --list)
  for applet in "$@"; do
    [ "$applet" = busybox ] || ln -s busybox "$dest/bin/$applet"
  done
}

# The pause binary: Kubernetes' own pause.c (from its Go module source), static.
build_pause() {
  local src
  src="$(go_module "k8s.io/kubernetes@$KUBERNETES_VERSION" Dir)/build/pause/linux/pause.c"
  apt_install gcc libc6-dev
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-kea" -o "$1" "$src"
  strip "$1"
}

# 2. build_kube_images OUT: the images `kubeadm config images list` names, around the
# toolchain's binaries.
build_kube_images() {
  local work name image images=()
  mapfile -t images < <("$(tool_bin kubeadm)" config images list --kubernetes-version "$KUBERNETES_VERSION")
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  for image in "${images[@]}"; do
    name=${image##*/}; name=${name%%:*}
    rm -rf "$work/root"
    scratch_root "$work/root"
    mkdir -p "$work/root/usr/local/bin"
    case "$name" in
      kube-apiserver | kube-controller-manager | kube-scheduler)
        cp "$(tool_bin "$name")" "$work/root/usr/local/bin/"
        import_dir "$work/root" "$image" ;;
      etcd)
        # kubeadm names its own etcd tag; the binary is the pinned $ETCD_VERSION.
        cp "$(tool_bin etcd)" "$work/root/usr/local/bin/"
        mkdir -p "$work/root/var/lib/etcd"
        import_dir "$work/root" "$image" "LABEL dev.kea.etcd-version=$ETCD_VERSION" ;;
      coredns)
        cp "$(tool_bin coredns)" "$work/root/coredns"
        import_dir "$work/root" "$image" 'ENTRYPOINT ["/coredns"]' 'EXPOSE 53 53/udp' ;;
      pause)
        build_pause "$work/root/pause"
        import_dir "$work/root" "$image" 'ENTRYPOINT ["/pause"]' 'USER 65535:65535' ;;
      kube-proxy)
        # kube-proxy runs iptables and conntrack: taken from the node rootfs.
        unpack_rootfs "$work/rootfs"
        add_iptables "$work/rootfs" "$work/root"
        copy_with_libs "$work/rootfs" "$work/root" /usr/sbin/conntrack
        cp "$(tool_bin kube-proxy)" "$work/root/usr/local/bin/"
        import_dir "$work/root" "$image" ;;
      *) die "no recipe for image $image" ;;
    esac
  done
  docker save "${images[@]}" -o "$1"
}

# 2b. build_storage_images OUT: the default StorageClass's images
# (hack/kind/default-storage.yaml): the toolchain's local-path-provisioner FROM scratch, as
# nobody; its helper pods (sh, mkdir, rm, chmod on the node's folders) from Debian's
# busybox-static, a static busybox and its applets.
build_storage_images() {
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  scratch_root "$work/provisioner"
  mkdir -p "$work/provisioner/usr/local/bin"
  cp "$(tool_bin local-path-provisioner)" "$work/provisioner/usr/local/bin/"
  import_dir "$work/provisioner" "$PROVISIONER_IMAGE" 'USER 65534:65534' \
    'ENTRYPOINT ["/usr/local/bin/local-path-provisioner"]' \
    "LABEL dev.kea.local-path-provisioner-version=$LOCAL_PATH_PROVISIONER_VERSION"
  mkdir -p "$work/helper/tmp"
  chmod 1777 "$work/helper/tmp"
  add_busybox "$work/helper"
  import_dir "$work/helper" "$HELPER_IMAGE" 'CMD ["sh"]' "LABEL dev.kea.busybox-static=$BUSYBOX_VERSION"
  docker save "$PROVISIONER_IMAGE" "$HELPER_IMAGE" -o "$1"
}

# 2c. build_addon_images OUT: kube-router (hack/kind/kube-router.yaml) FROM scratch around
# the toolchain's binary, with what it runs (iptables, ipset, ip) and what its install-cni
# init container copies into a node's /opt/cni/bin when missing (the bridge, host-local,
# loopback and portmap CNI plugins, in /usr/libexec/cni like kube-router's own image), all
# from the node rootfs, plus a few busybox applets for that init container's script.
# metrics-server (hack/kind/metrics-server.yaml) FROM scratch, as nobody.
build_addon_images() {
  local work rootfs root plugin
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  rootfs="$work/rootfs" root="$work/kube-router"
  unpack_rootfs "$rootfs" ./etc/iproute2
  [ -x "$rootfs/usr/sbin/ipset" ] || die "the node rootfs has no ipset: rebuild it (KEA_KIND_REBUILD=1)"
  scratch_root "$root" /bin/sh
  mkdir -p "$root/usr/local/bin" "$root/usr/libexec/cni" "$root/var/lib/kube-router"
  add_iptables "$rootfs" "$root"
  copy_with_libs "$rootfs" "$root" /usr/sbin/ipset /usr/bin/ip
  cp -a "$rootfs/etc/iproute2" "$root/etc/" # kube-router adds its routing table to rt_tables
  for plugin in bridge host-local loopback portmap; do
    cp "$rootfs/usr/lib/cni/$plugin" "$root/usr/libexec/cni/"
  done
  # busybox for the init container's sh, cp, mv, install (and for kubectl exec)
  add_busybox "$root" sh cat cp ln ls mkdir mv rm install test [ echo sleep
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  cp "$(tool_bin kube-router)" "$root/usr/local/bin/kube-router"
  import_dir "$root" "$KUBE_ROUTER_IMAGE" 'ENTRYPOINT ["/usr/local/bin/kube-router"]' \
    "LABEL dev.kea.kube-router-version=$KUBE_ROUTER_VERSION"
  root="$work/metrics-server"
  scratch_root "$root"
  cp "$(tool_bin metrics-server)" "$root/metrics-server"
  import_dir "$root" "$METRICS_SERVER_IMAGE" 'USER 65534:65534' 'ENTRYPOINT ["/metrics-server"]' \
    "LABEL dev.kea.metrics-server-version=$METRICS_SERVER_VERSION"
  docker save "$KUBE_ROUTER_IMAGE" "$METRICS_SERVER_IMAGE" -o "$1"
}

# require_images MANIFEST TAG...: MANIFEST must run these tags, which the node preloads.
require_images() {
  local tag
  for tag in "${@:2}"; do
    grep -q "image: $tag\$" "$1" || die "$1 does not run $tag: update its image tags"
  done
}

# 2. The image tarballs, each keyed by its recipe and inputs (the binaries' hashes for those
# built from them: those must exist first).
build_images() {
  local missing
  missing=$("$HACK_DIR/toolchain.sh" missing kind | cut -d' ' -f1 | xargs)
  [ -z "$missing" ] || die "not built yet: $missing (hack/toolchain.sh kind)"
  require_images "$HACK_DIR/kind/default-storage.yaml" "$PROVISIONER_IMAGE" "$HELPER_IMAGE"
  require_images "$HACK_DIR/kind/kube-router.yaml" "$KUBE_ROUTER_IMAGE"
  require_images "$HACK_DIR/kind/metrics-server.yaml" "$METRICS_SERVER_IMAGE"
  KUBE_IMAGES_TAR="$KIND_CACHE/images-$KUBERNETES_VERSION-$( {
    echo "$ETCD_VERSION" "$COREDNS_VERSION" "$PAUSE_VERSION" "$ROOTFS_KEY"
    declare -f build_kube_images import_dir scratch_root unpack_rootfs copy_with_libs add_iptables build_pause
  } | cache_key).tar"
  STORAGE_IMAGES_TAR="$KIND_CACHE/storage-images-$( {
    echo "$PROVISIONER_IMAGE" "$HELPER_IMAGE"
    sha256sum "$(tool_bin local-path-provisioner)" | cut -d' ' -f1
    declare -f build_storage_images import_dir scratch_root add_busybox
  } | cache_key).tar"
  ADDON_IMAGES_TAR="$KIND_CACHE/addon-images-$( {
    echo "$KUBE_ROUTER_IMAGE" "$METRICS_SERVER_IMAGE" "$ROOTFS_KEY"
    sha256sum "$(tool_bin kube-router)" "$(tool_bin metrics-server)" | cut -d' ' -f1
    declare -f build_addon_images import_dir scratch_root unpack_rootfs copy_with_libs add_iptables add_busybox
  } | cache_key).tar"
  cached_artifact "control-plane images" "$KUBE_IMAGES_TAR" build_kube_images
  cached_artifact "storage images" "$STORAGE_IMAGES_TAR" build_storage_images
  cached_artifact "add-on images" "$ADDON_IMAGES_TAR" build_addon_images
}

# 3. The node image: the rootfs imported as a base (with the entrypoint and env of
# kind's base image; `docker import` takes no STOPSIGNAL, the build step sets it), then
# the Kubernetes binaries and the image tarballs on top.
build_node() {
  local base="kea.dev/kind-base:$DEBIAN_SUITE-$ROOTFS_KEY" tarballs inputs work name
  tarballs=("$KUBE_IMAGES_TAR" "$STORAGE_IMAGES_TAR" "$ADDON_IMAGES_TAR")
  inputs=$( {
    echo "$ROOTFS_KEY"
    sha256sum "$(tool_bin kubeadm)" "$(tool_bin kubelet)" "$(tool_bin kubectl)" "$(tool_bin crictl)"
    ls -l --time-style=+%s "${tarballs[@]}"
    sha256sum "$HACK_DIR/kind/default-storage.yaml" "$HACK_DIR/kind/kube-router.yaml"
  } | cache_key)
  if [ "$(image_inputs "$NODE_IMAGE")" = "$inputs" ]; then
    log "node image up to date: $NODE_IMAGE"
    return 0
  fi
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    timed "docker import $(basename "$ROOTFS_TAR") as $base" docker import \
      -c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
      -c 'ENV container=docker' \
      "$ROOTFS_TAR" "$base" >/dev/null
    # older base images (other recipes); still used by the node image until it is rebuilt
    docker images --format '{{.Repository}}:{{.Tag}}' kea.dev/kind-base | grep -vxF "$base" |
      xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  log "building $NODE_IMAGE on $base"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  for name in kubeadm kubelet kubectl crictl; do cp "$(tool_bin "$name")" "$work/"; done
  cp "$KUBE_IMAGES_TAR" "$work/kube-images.tar"
  cp "$STORAGE_IMAGES_TAR" "$work/storage-images.tar"
  cp "$ADDON_IMAGES_TAR" "$work/addon-images.tar"
  cp "$HACK_DIR/kind/default-storage.yaml" "$HACK_DIR/kind/kube-router.yaml" "$work/"
  echo "$KUBERNETES_VERSION" >"$work/version"
  printf '%s\n' "FROM $base" \
    'COPY kubeadm kubelet kubectl /usr/bin/' \
    'COPY crictl /usr/local/bin/' \
    'COPY version /kind/version' \
    'COPY kube-images.tar storage-images.tar addon-images.tar /kind/images/' \
    'COPY default-storage.yaml /kind/manifests/default-storage.yaml' \
    'COPY kube-router.yaml /kind/manifests/default-cni.yaml' \
    'STOPSIGNAL SIGRTMIN+3' \
    "LABEL dev.kea.inputs=$inputs dev.kea.kubernetes-version=$KUBERNETES_VERSION" >"$work/Dockerfile"
  run_logged "$work/build.log" docker build -q -t "$NODE_IMAGE" "$work"
  log "node image ready: $NODE_IMAGE ($(image_size "$NODE_IMAGE"))"
}

build_all() {
  cached_artifact "node rootfs" "$ROOTFS_TAR" build_rootfs
  build_images
  build_node
}

# Keyed by the package list, the recipe and the files it adds from hack/kind/.
ROOTFS_KEY=$( {
  printf '%s\n' "$DEBIAN_SUITE" "$KIND_VERSION" "$PAUSE_VERSION" "${PACKAGES[@]}"
  declare -f build_rootfs debootstrap_minbase tar_rootfs
  cat "$HACK_DIR"/kind/{kea-preload-images.service,kubelet-kea.conf,preload-images.sh}
} | cache_key)
ROOTFS_TAR="$KIND_CACHE/rootfs-$DEBIAN_SUITE-$ROOTFS_KEY.tar"

if [ "${1:-all}" != name ] && [ "${KEA_KIND_REBUILD:-0}" = 1 ]; then
  rm -rf "$KIND_CACHE"/{rootfs,images,storage-images,addon-images}-*
  docker rmi -f "$NODE_IMAGE" >/dev/null 2>&1 || true
fi
case "${1:-all}" in
  rootfs) cached_artifact "node rootfs" "$ROOTFS_TAR" build_rootfs ;;
  images) cached_artifact "node rootfs" "$ROOTFS_TAR" build_rootfs; build_images ;;
  all) timed "node image $NODE_IMAGE" build_all ;;
  name) echo "$NODE_IMAGE" ;;
  *) die "unknown step '$1'" ;;
esac
