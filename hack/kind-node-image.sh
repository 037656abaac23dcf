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
# Steps, each cached under $KEA_CACHE_DIR/kind/:
#   1. rootfs: debootstrap bookworm + systemd, containerd, runc, iptables, CNI plugins...,
#      plus kind's base files (entrypoint, containerd config, kubelet unit).
#   2. images: kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd,
#      coredns, pause, each FROM scratch around the toolchain's binaries (kube-proxy on
#      a small iptables base), tagged exactly as `kubeadm config images list` names them,
#      saved as docker tarballs; and the images of the default StorageClass
#      (hack/kind/default-storage.yaml): local-path-provisioner FROM scratch around the
#      toolchain's binary, and its helper from Debian's busybox-static; and the add-ons:
#      kube-router (pod network + NetworkPolicy, with iptables, ipset, ip and the CNI
#      plugins from the node rootfs) and metrics-server FROM scratch.
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
SUITE=bookworm
MIRROR=${KEA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KIND_FILES="$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
export DOCKER_BUILDKIT=0 # the machine's docker CLI has no buildx

# What the node needs (kind's base image list, minus what it builds from source:
# Debian's containerd/runc/CNI plugins stand in for those).
PACKAGES=(
  systemd systemd-sysv dbus containerd runc containernetworking-plugins
  iptables nftables conntrack iproute2 ethtool socat util-linux mount kmod
  libseccomp2 bash ca-certificates jq procps ipset
)
# Keyed by the package list, the recipe (build_rootfs) and the files it adds from hack/kind/.
ROOTFS_KEY=$( {
  printf '%s\n' "$SUITE" "$KIND_VERSION" "$PAUSE_VERSION" "${PACKAGES[@]}"
  sed -n '/^build_rootfs()/,/^}/p' "${BASH_SOURCE[0]}"
  cat "$HACK_DIR"/kind/{kea-preload-images.service,kubelet-kea.conf,preload-images.sh}
} | sha256sum | cut -c1-12)
ROOTFS_TAR="$KIND_CACHE/rootfs-$SUITE-$ROOTFS_KEY.tar"
# Keyed by the recipes below and the versions they use: changing either rebuilds the images.
IMAGES_DIR="$KIND_CACHE/images-$KUBERNETES_VERSION-$( {
  echo "$ETCD_VERSION" "$COREDNS_VERSION" "$PAUSE_VERSION"
  sed -n -e '/^build_images()/,/^}/p' -e '/^add_iptables()/,/^}/p' "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-8)"
# The default StorageClass's images: the tags hack/kind/default-storage.yaml names.
PROVISIONER_IMAGE="kea.dev/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION"
HELPER_IMAGE=kea.dev/local-path-helper:busybox-$SUITE
# Keyed by the recipe, the version and the provisioner binary (computed in the function:
# the binary may not be built yet).
STORAGE_DIR=
# The add-ons: the pod network and NetworkPolicy controller kind installs as its default
# CNI (hack/kind/kube-router.yaml), and metrics-server (hack/kind/metrics-server.yaml,
# applied by hack/kind.sh up). Keyed like the storage images, plus the rootfs they take
# iptables, ipset, ip and the CNI plugins from.
KUBE_ROUTER_IMAGE="kea.dev/kube-router:$KUBE_ROUTER_VERSION"
METRICS_SERVER_IMAGE="kea.dev/metrics-server:$METRICS_SERVER_VERSION"
ADDONS_DIR=

[ "${KEA_KIND_REBUILD:-0}" = 1 ] && rm -rf "$ROOTFS_TAR" "$IMAGES_DIR" "$KIND_CACHE"/storage-images-* "$KIND_CACHE"/addon-images-* &&
  docker rmi -f "$NODE_IMAGE" >/dev/null 2>&1

step() { log "==> $*"; }

# 1. The node rootfs: debootstrap (slow once, ~5 min) then kind's files and settings.
build_rootfs() {
  if [ -f "$ROOTFS_TAR" ]; then
    log "rootfs cached: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null ||
    die "apt-get install debootstrap failed"
  [ -d "$KIND_FILES" ] || (cd /tmp && go mod download "sigs.k8s.io/kind@$KIND_VERSION") ||
    die "could not fetch sigs.k8s.io/kind@$KIND_VERSION from the Go module proxy"
  local start=$SECONDS root="$KIND_CACHE/rootfs.tmp"
  rm -rf "$root" && mkdir -p "$root"
  step "debootstrap $SUITE into $root (${#PACKAGES[@]} packages + dependencies)"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    "$SUITE" "$root" "$MIRROR" >"$KIND_CACHE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$KIND_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $KIND_CACHE/debootstrap.log)"; }
  log "  debootstrap took $((SECONDS - start))s"

  step "adding kind $KIND_VERSION base files"
  install -m 0755 "$KIND_FILES"/usr/local/bin/* "$root/usr/local/bin/"
  mkdir -p "$root/kind/bin" "$root/etc/containerd" "$root/etc/systemd/system/kubelet.service.d"
  cp -r "$KIND_FILES/kind/." "$root/kind/"
  chmod 0755 "$root/kind/bin" "$root"/kind/bin/*
  install -m 0644 "$KIND_FILES/etc/crictl.yaml" "$root/etc/"
  install -m 0644 "$KIND_FILES"/etc/containerd/* "$root/etc/containerd/"
  install -m 0644 "$KIND_FILES"/etc/default/* "$root/etc/default/"
  install -m 0644 "$KIND_FILES"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  find "$KIND_FILES/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$root/etc/systemd/system/" \;
  install -m 0644 "$KIND_FILES"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
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

  step "configuring systemd and containerd in the rootfs"
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
  tar -C "$root" --numeric-owner -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  find "$KIND_CACHE" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -path "$ROOTFS_TAR" -delete # older recipes
  rm -rf "$root"
  log "rootfs ready: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1), $((SECONDS - start))s)"
}

# import_dir DIR TAG [DOCKER_IMPORT_CHANGES...]: a FROM-scratch image from a folder.
import_dir() {
  local dir=$1 tag=$2; shift 2
  local changes=(-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin') change
  for change in "$@"; do changes+=(-c "$change"); done
  tar -C "$dir" --numeric-owner -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  log "  $tag ($(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.1f MB", $1 / 1e6}'))"
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

# The pause binary: Kubernetes' own pause.c (from its Go module source), static.
build_pause() {
  local out=$1 src
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  [ -f "$src" ] || (cd /tmp && go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION")
  command -v gcc >/dev/null || apt-get install -y -q gcc libc6-dev >/dev/null
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-kea" -o "$out" "$src"
  strip "$out"
}

# 2. The images `kubeadm config images list` names, around the toolchain's binaries.
build_images() {
  local tarball="$IMAGES_DIR/kube-images.tar"
  if [ -f "$tarball" ]; then
    log "control-plane images cached: $tarball ($(du -h "$tarball" | cut -f1))"
    return 0
  fi
  local kubeadm start=$SECONDS work name image images=()
  kubeadm=$(tool_bin kubeadm "$KUBERNETES_VERSION")
  for name in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubeadm kubelet kubectl; do
    [ -x "$(tool_bin "$name" "$KUBERNETES_VERSION")" ] || die "$name $KUBERNETES_VERSION is not built yet: hack/toolchain.sh kind control-plane"
  done
  [ -x "$(tool_bin etcd "$ETCD_VERSION")" ] || die "etcd $ETCD_VERSION is not built yet: hack/toolchain.sh control-plane"
  [ -x "$(tool_bin coredns "$COREDNS_VERSION")" ] || die "coredns $COREDNS_VERSION is not built yet: hack/toolchain.sh kind"
  mapfile -t images < <("$kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION")
  step "building ${#images[@]} control-plane images FROM scratch"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  for image in "${images[@]}"; do
    name=${image##*/}; name=${name%%:*}
    rm -rf "$work/root" && mkdir -p "$work/root/usr/local/bin" "$work/root/tmp" "$work/root/etc"
    chmod 1777 "$work/root/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$work/root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$work/root/etc/group"
    case "$name" in
      kube-apiserver | kube-controller-manager | kube-scheduler)
        cp "$(tool_bin "$name" "$KUBERNETES_VERSION")" "$work/root/usr/local/bin/"
        import_dir "$work/root" "$image" ;;
      etcd)
        # kubeadm names its own etcd tag; the binary is the pinned $ETCD_VERSION.
        cp "$(tool_bin etcd "$ETCD_VERSION")" "$work/root/usr/local/bin/"
        mkdir -p "$work/root/var/lib/etcd"
        import_dir "$work/root" "$image" "LABEL dev.kea.etcd-version=$ETCD_VERSION" ;;
      coredns)
        cp "$(tool_bin coredns "$COREDNS_VERSION")" "$work/root/coredns"
        import_dir "$work/root" "$image" 'ENTRYPOINT ["/coredns"]' 'EXPOSE 53 53/udp' ;;
      pause)
        build_pause "$work/root/pause"
        import_dir "$work/root" "$image" 'ENTRYPOINT ["/pause"]' 'USER 65535:65535' ;;
      kube-proxy)
        # kube-proxy runs iptables and conntrack: taken from the node rootfs.
        local rootfs="$work/rootfs"
        mkdir -p "$rootfs"
        tar -C "$rootfs" -xf "$ROOTFS_TAR" ./usr ./lib ./lib64 ./bin ./sbin 2>/dev/null || true
        add_iptables "$rootfs" "$work/root"
        copy_with_libs "$rootfs" "$work/root" /usr/sbin/conntrack
        cp "$(tool_bin kube-proxy "$KUBERNETES_VERSION")" "$work/root/usr/local/bin/"
        import_dir "$work/root" "$image" ;;
      *) die "no recipe for image $image" ;;
    esac
  done
  mkdir -p "$IMAGES_DIR"
  docker save "${images[@]}" -o "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
  find "$KIND_CACHE" -maxdepth 1 -name "images-$KUBERNETES_VERSION-*" ! -path "$IMAGES_DIR" -exec rm -rf {} + # older recipes
  log "control-plane images ready: $tarball ($(du -h "$tarball" | cut -f1), $((SECONDS - start))s)"
}

# 2b. The default StorageClass's images (hack/kind/default-storage.yaml): the toolchain's
# local-path-provisioner FROM scratch, as nobody; its helper pods (sh, mkdir, rm, chmod
# on the node's folders) from Debian's busybox-static, a static busybox and its applets.
build_storage_images() {
  local provisioner manifest="$HACK_DIR/kind/default-storage.yaml" tag
  provisioner=$(tool_bin local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION")
  [ -x "$provisioner" ] || die "local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION is not built yet: hack/toolchain.sh kind"
  for tag in "$PROVISIONER_IMAGE" "$HELPER_IMAGE"; do
    grep -q "image: $tag\$" "$manifest" || die "$manifest does not run $tag: update its image tags"
  done
  STORAGE_DIR="$KIND_CACHE/storage-images-$( {
    echo "$PROVISIONER_IMAGE" "$HELPER_IMAGE"
    sha256sum "$provisioner" | cut -d' ' -f1
    sed -n '/^build_storage_images()/,/^}/p' "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-8)"
  local tarball="$STORAGE_DIR/storage-images.tar"
  if [ -f "$tarball" ]; then
    log "storage images cached: $tarball ($(du -h "$tarball" | cut -f1))"
    return 0
  fi
  local start=$SECONDS work deb applet
  step "building the local-path-provisioner and helper images FROM scratch"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  mkdir -p "$work/provisioner/usr/local/bin" "$work/provisioner/tmp" "$work/provisioner/etc"
  chmod 1777 "$work/provisioner/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$work/provisioner/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/provisioner/etc/group"
  cp "$provisioner" "$work/provisioner/usr/local/bin/"
  import_dir "$work/provisioner" "$PROVISIONER_IMAGE" 'USER 65534:65534' \
    'ENTRYPOINT ["/usr/local/bin/local-path-provisioner"]' \
    "LABEL dev.kea.local-path-provisioner-version=$LOCAL_PATH_PROVISIONER_VERSION"
  # The host's Debian apt (this machine is bookworm like the node); lists refreshed once if stale.
  chmod 0755 "$work" # apt's _apt user downloads into it
  (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1) ||
    { apt-get update -qq && (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1); } ||
    die "apt-get download busybox-static failed"
  deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n 1)
  mkdir -p "$work/deb" "$work/helper/bin" "$work/helper/tmp"
  chmod 1777 "$work/helper/tmp"
  dpkg-deb -x "$deb" "$work/deb"
  cp "$work/deb/bin/busybox" "$work/helper/bin/busybox"
  for applet in $("$work/helper/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/helper/bin/$applet"
  done
  import_dir "$work/helper" "$HELPER_IMAGE" 'CMD ["sh"]' \
    "LABEL dev.kea.busybox-static=$(dpkg-deb -f "$deb" Version)"
  mkdir -p "$STORAGE_DIR"
  docker save "$PROVISIONER_IMAGE" "$HELPER_IMAGE" -o "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
  find "$KIND_CACHE" -maxdepth 1 -name 'storage-images-*' ! -path "$STORAGE_DIR" -exec rm -rf {} + # older recipes
  log "storage images ready: $tarball ($(du -h "$tarball" | cut -f1), $((SECONDS - start))s)"
}

# 2c. The add-ons. kube-router (hack/kind/kube-router.yaml) FROM scratch around the
# toolchain's binary, with what it runs (iptables, ipset, ip) and what its install-cni
# init container copies into a node's /opt/cni/bin when missing (the bridge, host-local,
# loopback and portmap CNI plugins, in /usr/libexec/cni like kube-router's own image), all
# from the node rootfs, plus a few busybox applets for that init container's script.
# metrics-server (hack/kind/metrics-server.yaml) FROM scratch, as nobody.
build_addon_images() {
  local router metrics tag
  router=$(tool_bin kube-router "$KUBE_ROUTER_VERSION")
  metrics=$(tool_bin metrics-server "$METRICS_SERVER_VERSION")
  [ -x "$router" ] || die "kube-router $KUBE_ROUTER_VERSION is not built yet: hack/toolchain.sh addons"
  [ -x "$metrics" ] || die "metrics-server $METRICS_SERVER_VERSION is not built yet: hack/toolchain.sh addons"
  grep -q "image: $KUBE_ROUTER_IMAGE\$" "$HACK_DIR/kind/kube-router.yaml" ||
    die "hack/kind/kube-router.yaml does not run $KUBE_ROUTER_IMAGE: update its image tags"
  grep -q "image: $METRICS_SERVER_IMAGE\$" "$HACK_DIR/kind/metrics-server.yaml" ||
    die "hack/kind/metrics-server.yaml does not run $METRICS_SERVER_IMAGE: update its image tag"
  ADDONS_DIR="$KIND_CACHE/addon-images-$( {
    echo "$KUBE_ROUTER_IMAGE" "$METRICS_SERVER_IMAGE" "$ROOTFS_KEY"
    sha256sum "$router" "$metrics" | cut -d' ' -f1
    sed -n -e '/^build_addon_images()/,/^}/p' -e '/^add_iptables()/,/^}/p' "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-8)"
  local tarball="$ADDONS_DIR/addon-images.tar"
  if [ -f "$tarball" ]; then
    log "add-on images cached: $tarball ($(du -h "$tarball" | cut -f1))"
    return 0
  fi
  local start=$SECONDS work rootfs root deb applet plugin
  step "building the kube-router and metrics-server images FROM scratch"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  rootfs="$work/rootfs" root="$work/kube-router"
  mkdir -p "$rootfs" "$root/usr/local/bin" "$root/usr/libexec/cni" "$root/bin" "$root/etc" "$root/tmp" \
    "$root/var/lib/kube-router"
  chmod 1777 "$root/tmp"
  tar -C "$rootfs" -xf "$ROOTFS_TAR" ./usr ./lib ./lib64 ./bin ./sbin ./etc/iproute2 2>/dev/null || true
  [ -x "$rootfs/usr/sbin/ipset" ] || die "the node rootfs has no ipset: rebuild it (KEA_KIND_REBUILD=1)"
  add_iptables "$rootfs" "$root"
  copy_with_libs "$rootfs" "$root" /usr/sbin/ipset /usr/bin/ip
  cp -a "$rootfs/etc/iproute2" "$root/etc/" # kube-router adds its routing table to rt_tables
  for plugin in bridge host-local loopback portmap; do
    cp "$rootfs/usr/lib/cni/$plugin" "$root/usr/libexec/cni/"
  done
  # busybox for the init container's sh, cp, mv, install (and for kubectl exec)
  chmod 0755 "$work" # apt's _apt user downloads into it
  (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1) ||
    { apt-get update -qq && (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1); } ||
    die "apt-get download busybox-static failed"
  deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n 1)
  dpkg-deb -x "$deb" "$work/deb"
  cp "$work/deb/bin/busybox" "$root/bin/busybox"
  for applet in sh cat cp ln ls mkdir mv rm install test [ echo sleep; do
    ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  cp "$router" "$root/usr/local/bin/kube-router"
  import_dir "$root" "$KUBE_ROUTER_IMAGE" 'ENTRYPOINT ["/usr/local/bin/kube-router"]' \
    "LABEL dev.kea.kube-router-version=$KUBE_ROUTER_VERSION"
  root="$work/metrics-server"
  mkdir -p "$root/tmp" "$root/etc"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  cp "$metrics" "$root/metrics-server"
  import_dir "$root" "$METRICS_SERVER_IMAGE" 'USER 65534:65534' 'ENTRYPOINT ["/metrics-server"]' \
    "LABEL dev.kea.metrics-server-version=$METRICS_SERVER_VERSION"
  mkdir -p "$ADDONS_DIR"
  docker save "$KUBE_ROUTER_IMAGE" "$METRICS_SERVER_IMAGE" -o "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
  find "$KIND_CACHE" -maxdepth 1 -name 'addon-images-*' ! -path "$ADDONS_DIR" -exec rm -rf {} + # older recipes
  log "add-on images ready: $tarball ($(du -h "$tarball" | cut -f1), $((SECONDS - start))s)"
}

# 3. The node image: the rootfs imported as a base (with the entrypoint and env of
# kind's base image; `docker import` takes no STOPSIGNAL, the build step sets it), then
# the Kubernetes binaries and the image tarball on top.
build_node() {
  local base inputs work name start=$SECONDS
  base="kea.dev/kind-base:$SUITE-$ROOTFS_KEY"
  inputs=$( {
    echo "$ROOTFS_KEY"
    for name in kubeadm kubelet kubectl; do sha256sum "$(tool_bin "$name" "$KUBERNETES_VERSION")"; done
    sha256sum "$(tool_bin crictl "$CRICTL_VERSION")"
    ls -l --time-style=+%s "$IMAGES_DIR/kube-images.tar" "$STORAGE_DIR/storage-images.tar" "$ADDONS_DIR/addon-images.tar"
    sha256sum "$HACK_DIR/kind/default-storage.yaml" "$HACK_DIR/kind/kube-router.yaml"
  } | sha256sum | cut -c1-16)
  if [ "$(docker image inspect "$NODE_IMAGE" --format '{{index .Config.Labels "dev.kea.inputs"}}' 2>/dev/null)" = "$inputs" ]; then
    log "node image up to date: $NODE_IMAGE"
    return 0
  fi
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    step "docker import $(basename "$ROOTFS_TAR") as $base"
    docker import \
      -c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
      -c 'ENV container=docker' \
      "$ROOTFS_TAR" "$base" >/dev/null
    # older base images (other recipes); still used by the node image until it is rebuilt
    docker images --format '{{.Repository}}:{{.Tag}}' kea.dev/kind-base | grep -vxF "$base" |
      xargs -r docker rmi >/dev/null 2>&1 || true
  fi
  step "building $NODE_IMAGE on $base"
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now
  trap "rm -rf '$work'" RETURN
  for name in kubeadm kubelet kubectl; do cp "$(tool_bin "$name" "$KUBERNETES_VERSION")" "$work/"; done
  cp "$(tool_bin crictl "$CRICTL_VERSION")" "$work/"
  cp "$IMAGES_DIR/kube-images.tar" "$STORAGE_DIR/storage-images.tar" "$ADDONS_DIR/addon-images.tar" \
    "$HACK_DIR/kind/default-storage.yaml" "$HACK_DIR/kind/kube-router.yaml" "$work/"
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
  docker build -q -t "$NODE_IMAGE" "$work" >"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; die "docker build failed"; }
  log "node image ready: $NODE_IMAGE ($(docker image inspect "$NODE_IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}'), $((SECONDS - start))s)"
}

case "${1:-all}" in
  rootfs) build_rootfs ;;
  images) build_rootfs; build_images; build_storage_images; build_addon_images ;;
  all)
    start=$SECONDS
    build_rootfs; build_images; build_storage_images; build_addon_images; build_node
    log "done in $((SECONDS - start))s: $NODE_IMAGE" ;;
  name) echo "$NODE_IMAGE" ;;
  *) die "unknown step '$1'" ;;
esac
