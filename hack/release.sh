#!/usr/bin/env bash
# Releases kea VERSION: the images, their signatures and SBOMs, the chart, and kea.yaml.
#
#   hack/release.sh VERSION
#
# In stages, for images of several platforms (.github/workflows/release.yml): on a machine of
# each platform KEA_RELEASE_STAGE=images builds, pushes, signs and attests NAME:VERSION-ARCH;
# then KEA_RELEASE_STAGE=publish with KEA_RELEASE_PLATFORMS="amd64 arm64" makes each
# NAME:VERSION an index of those (signed, with every platform's SBOM attested) and goes on with
# the chart and the manifests, reading the SBOMs from the same output folder.
#
# 1. Refuses a VERSION that is not the workspace's (Cargo.toml) or has no CHANGELOG.md entry.
# 2. Builds the images (hack/images.sh VERSION): kea-service, kea-operator, kea-mariadb,
#    kea-redis; pushes each as REGISTRY/NAME:VERSION and notes its digest.
# 3. Signs each image by digest (cosign) and attaches its SPDX SBOM as a signed attestation
#    (cargo xtask sbom: the crates of Cargo.lock compiled into it, or its Debian packages).
# 4. Packages the chart with its images pinned by digest, pushes it to oci://REGISTRY/charts,
#    signs it.
# 5. Writes to $KEA_RELEASE_OUT (default dist/VERSION): kea.yaml (deploy/: the namespace, the
#    CRD, RBAC and the operator, images by digest), kea-examples.yaml (deploy/examples/ on the
#    released kea-service), the chart's .tgz, the SBOMs, notes.md (the CHANGELOG section),
#    digests.env (NAME_DIGEST=sha256:... of each artifact) and SHA256SUMS.
#
# Env:
#   KEA_RELEASE_REGISTRY   where the release lives and is pulled from (default ghcr.io/kea-dev,
#                          the chart's default image path: values.yaml image.repository)
#   KEA_RELEASE_PUSH_TO    where to push, when that registry is reached at another address;
#                          the release tier pushes to the local registry (hack/registry.sh),
#                          which kind's nodes reach as ghcr.io through a containerd mirror
#   KEA_RELEASE_PLAIN_HTTP=1   the push address speaks plain HTTP (the local registry)
#   COSIGN_KEY, COSIGN_PASSWORD   the signing key (a file or a KMS URI) and its password;
#                          without COSIGN_KEY, keyless signing (GitHub Actions' OIDC identity)
#   KEA_RELEASE_SOURCE     the source tree to release (default this one); the upgrade test
#                          releases the previous commit with this script
#   KEA_RELEASE_IMAGES_FROM   the tree whose hack/images.sh builds the images (default the
#                          source tree): another checkout of the same image inputs
#   KEA_RELEASE_OUT        the output folder
# Needs Docker (hack/docker.sh start), helm and cosign (hack/toolchain.sh helm release).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
toolchain_path

VERSION=${1:-}
[ -n "$VERSION" ] || die "usage: $0 VERSION"
[[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION must be X.Y.Z (SemVer), not '$VERSION'"
SOURCE=$(cd "${KEA_RELEASE_SOURCE:-$REPO_ROOT}" && pwd)
IMAGES_FROM=$(cd "${KEA_RELEASE_IMAGES_FROM:-$SOURCE}" && pwd)
REGISTRY=${KEA_RELEASE_REGISTRY:-ghcr.io/kea-dev}
PUSH_TO=${KEA_RELEASE_PUSH_TO:-$REGISTRY}
OUT=${KEA_RELEASE_OUT:-$SOURCE/dist/$VERSION}
IMAGES=(kea-service kea-operator kea-mariadb kea-redis)
STAGE=${KEA_RELEASE_STAGE:-all}
PLATFORMS=${KEA_RELEASE_PLATFORMS:-}
case "$STAGE" in
  all | images) ;;
  publish) [ -n "$PLATFORMS" ] || die "KEA_RELEASE_STAGE=publish needs KEA_RELEASE_PLATFORMS (e.g. \"amd64 arm64\")" ;;
  *) die "KEA_RELEASE_STAGE must be all, images or publish, not '$STAGE'" ;;
esac
NAMESPACE_MANIFEST="$SOURCE/deploy/01-namespace.yaml"

require_docker
require_cmd helm "build it with hack/toolchain.sh helm"
require_cmd cosign "build it with hack/toolchain.sh release"
HELM_FLAGS=() COSIGN_FLAGS=() MANIFEST_FLAGS=()
if [ "${KEA_RELEASE_PLAIN_HTTP:-0}" = 1 ]; then
  HELM_FLAGS+=(--plain-http)
  COSIGN_FLAGS+=(--allow-http-registry)
  MANIFEST_FLAGS+=(--insecure)
fi
# This machine's platform, as Docker names it, and the Rust target its binaries are built for.
ARCH=$(docker version -f '{{.Server.Arch}}')
case "$ARCH" in
  amd64) RUST_TARGET=x86_64-unknown-linux-gnu ;;
  arm64) RUST_TARGET=aarch64-unknown-linux-gnu ;;
  *) die "no release for the platform $ARCH" ;;
esac
if [ -n "${COSIGN_KEY:-}" ]; then
  # A key pair, without the public transparency log (offline; the key is the trust root).
  SIGN_FLAGS=(--key "$COSIGN_KEY" --tlog-upload=false --use-signing-config=false)
elif [ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ]; then
  SIGN_FLAGS=() # keyless: Fulcio certificate for the workflow's identity, Rekor entry
else
  die "set COSIGN_KEY (cosign generate-key-pair), or run in GitHub Actions for keyless signing"
fi

# xtask ARGS...: this tree's cargo xtask, on the released tree.
xtask() { (cd "$REPO_ROOT" && cargo xtask --root "$SOURCE" "$@"); }

check_version() {
  local workspace
  workspace=$(workspace_version "$SOURCE")
  [ "$workspace" = "$VERSION" ] ||
    die "$SOURCE is version $workspace (Cargo.toml [workspace.package]), not $VERSION: set it there, then cargo xtask generate"
  xtask changelog "$VERSION" >"$OUT/notes.md" ||
    die "no release without its CHANGELOG.md entry"
}

# pushed_digest LOG: the digest a push (docker, docker manifest, helm) printed last into LOG.
pushed_digest() {
  local digest
  digest=$(grep -o 'sha256:[0-9a-f]\{64\}' "$1" | tail -n1)
  [ -n "$digest" ] || die "no digest in $1"
  echo "$digest"
}

# push NAME TAG: REGISTRY/NAME:TAG pushed (to PUSH_TO); its digest in DIGESTS[NAME].
declare -A DIGESTS
push() {
  local name=$1 ref="$PUSH_TO/$1:$2"
  docker tag "kea.dev/$name:$VERSION" "$ref"
  run_logged "$OUT/push.log" docker push "$ref"
  DIGESTS[$name]=$(pushed_digest "$OUT/push.log")
  rm -f "$OUT/push.log"
  log "pushed $REGISTRY/$name:$2@${DIGESTS[$name]} ($(image_size "$ref"))"
}

# sbom NAME FILE: its SPDX document in FILE.
sbom() {
  local name=$1 file=$2 args=(--image "$1" --version "$VERSION" --digest "${DIGESTS[$1]}" --target "$RUST_TARGET")
  case "$name" in
    kea-service) args+=(--package kea-service) ;;
    kea-operator) args+=(--package kea-cli) ;;
    *)
      local container
      container=$(docker create "kea.dev/$name:$VERSION")
      docker cp "$container:/var/lib/dpkg/status" "$OUT/$name.dpkg-status" >/dev/null
      docker rm "$container" >/dev/null
      args+=(--dpkg-status "$OUT/$name.dpkg-status")
      ;;
  esac
  xtask sbom "${args[@]}" --created-at "$SBOM_CREATED" >"$file" 2>"$OUT/sbom.log" || { cat "$OUT/sbom.log" >&2; die "SBOM of $name failed"; }
  log "$(cat "$OUT/sbom.log") (Cargo.lock: $(grep -c '^\[\[package\]\]' "$SOURCE/Cargo.lock") crates)"
  rm -f "$OUT/$name.dpkg-status" "$OUT/sbom.log"
}

# sign REF@DIGEST [SBOM...]: a signature, and each SBOM as a signed attestation.
sign() {
  local ref=$1 sbom
  shift
  run_logged "$OUT/cosign.log" cosign sign "${SIGN_FLAGS[@]}" "${COSIGN_FLAGS[@]}" --yes "$ref"
  for sbom in "$@"; do
    run_logged "$OUT/cosign.log" cosign attest "${SIGN_FLAGS[@]}" "${COSIGN_FLAGS[@]}" --yes \
      --type spdxjson --predicate "$sbom" "$ref"
  done
  rm -f "$OUT/cosign.log"
}

# images SUFFIX: the images built, each pushed as NAME:VERSION+SUFFIX, its SBOM written
# (NAME+SUFFIX.spdx.json), signed and attested.
images() {
  local suffix=$1 name
  timed "images $VERSION ($ARCH)" "$IMAGES_FROM/hack/images.sh" "$VERSION"
  # The binaries say the version they are released as.
  local says
  for name in kea-operator kea-service; do
    says=$(docker run --rm "kea.dev/$name:$VERSION" --version)
    [ "$says" = "$name $VERSION" ] || die "kea.dev/$name:$VERSION says '$says', not '$name $VERSION'"
  done
  for name in "${IMAGES[@]}"; do
    timed "push $name" push "$name" "$VERSION$suffix"
    timed "SBOM of $name" sbom "$name" "$OUT/$name$suffix.spdx.json"
    timed "sign $name" sign "$PUSH_TO/$name@${DIGESTS[$name]}" "$OUT/$name$suffix.spdx.json"
  done
}

# indexes: each NAME:VERSION an index of the platforms' NAME:VERSION-ARCH, signed, with their
# SBOMs attested; its digest in DIGESTS[NAME].
indexes() {
  local name arch sources sboms
  for name in "${IMAGES[@]}"; do
    sources=() sboms=()
    for arch in $PLATFORMS; do
      sources+=("$PUSH_TO/$name:$VERSION-$arch")
      [ -f "$OUT/$name-$arch.spdx.json" ] || die "no $OUT/$name-$arch.spdx.json: run the images stage on $arch first"
      sboms+=("$OUT/$name-$arch.spdx.json")
    done
    docker manifest rm "$PUSH_TO/$name:$VERSION" >/dev/null 2>&1 || true
    docker manifest create "${MANIFEST_FLAGS[@]}" "$PUSH_TO/$name:$VERSION" "${sources[@]}" >/dev/null ||
      die "docker manifest create $PUSH_TO/$name:$VERSION failed (are ${sources[*]} pushed?)"
    run_logged "$OUT/push.log" docker manifest push "${MANIFEST_FLAGS[@]}" --purge "$PUSH_TO/$name:$VERSION"
    DIGESTS[$name]=$(pushed_digest "$OUT/push.log")
    rm -f "$OUT/push.log"
    log "pushed the index $REGISTRY/$name:$VERSION@${DIGESTS[$name]} ($PLATFORMS)"
    timed "sign the index of $name" sign "$PUSH_TO/$name@${DIGESTS[$name]}" "${sboms[@]}"
  done
}

# The chart of the release: its images pinned by digest, packaged and pushed.
chart() {
  local work
  work=$(mktemp -d)
  cp -r "$SOURCE/charts/kea-operator" "$work/"
  # The digests become the defaults; values.yaml keeps its comments.
  sed -i -e "s|^  digest: \"\"|  digest: \"${DIGESTS[kea-operator]}\"|" \
    -e "s|^    mariadb: \"\"|    mariadb: \"$REGISTRY/kea-mariadb:$VERSION@${DIGESTS[kea-mariadb]}\"|" \
    -e "s|^    redis: \"\"|    redis: \"$REGISTRY/kea-redis:$VERSION@${DIGESTS[kea-redis]}\"|" \
    "$work/kea-operator/values.yaml"
  grep -q "digest: \"sha256:" "$work/kea-operator/values.yaml" ||
    die "$SOURCE/charts/kea-operator/values.yaml has no empty image.digest to pin"
  grep -q "^appVersion: \"$VERSION\"" "$work/kea-operator/Chart.yaml" ||
    die "the chart's appVersion is not $VERSION: run cargo xtask generate"
  helm package "$work/kea-operator" --version "$VERSION" --app-version "$VERSION" -d "$OUT" >/dev/null
  rm -rf "$work"
  run_logged "$OUT/push.log" helm push "$OUT/kea-operator-$VERSION.tgz" "oci://$PUSH_TO/charts" "${HELM_FLAGS[@]}"
  DIGESTS[chart]=$(pushed_digest "$OUT/push.log")
  rm -f "$OUT/push.log"
  log "pushed oci://$REGISTRY/charts/kea-operator:$VERSION@${DIGESTS[chart]}"
}

# kea.yaml: the namespace and the chart's objects as deploy/ has them; examples on the release.
manifests() {
  {
    echo "# kea $VERSION: kubectl apply -f kea.yaml (the operator in kea-system, its CRD and RBAC)."
    cat "$NAMESPACE_MANIFEST"
    helm template kea-operator "$OUT/kea-operator-$VERSION.tgz" --namespace kea-system --no-hooks |
      grep -v '^# Source: '
  } >"$OUT/kea.yaml"
  local example
  {
    echo "# The examples of kea $VERSION: kubectl apply -f kea-examples.yaml (namespace kea-demo)."
    for example in "$SOURCE"/deploy/examples/*.yaml; do
      echo "---"
      sed "s|image: kea.dev/kea-service:dev|image: $REGISTRY/kea-service:$VERSION@${DIGESTS[kea-service]}|" "$example"
    done
  } >"$OUT/kea-examples.yaml"
  grep -q "@${DIGESTS[kea-operator]}" "$OUT/kea.yaml" || die "kea.yaml does not pin the operator's digest"
}

main() {
  local start=$EPOCHREALTIME name
  # The stages of one release share the folder; a release in one go starts it afresh.
  if [ "$STAGE" = all ]; then rm -rf "$OUT"; fi
  mkdir -p "$OUT"
  check_version
  # The SBOMs' creation time: the released commit's, so that a rebuild gives the same ones.
  # (Not as SOURCE_DATE_EPOCH: the cc crate's build scripts rerun when it changes, and with
  # them most of the workspace would be compiled again.)
  SBOM_CREATED=$(git -C "$SOURCE" log -1 --format=%ct 2>/dev/null || date +%s)
  case "$STAGE" in
    all) images "" ;;
    images)
      images "-$ARCH"
      timed_summary
      log "pushed the $ARCH images of kea $VERSION to $PUSH_TO; then KEA_RELEASE_STAGE=publish"
      return 0
      ;;
    publish) indexes ;;
  esac
  timed "chart" chart
  timed "sign the chart" sign "$PUSH_TO/charts/kea-operator@${DIGESTS[chart]}"
  manifests
  for name in "${IMAGES[@]}" chart; do
    local variable=${name//-/_}_DIGEST
    echo "${variable^^}=${DIGESTS[$name]}"
  done >"$OUT/digests.env"
  (cd "$OUT" && sha256sum -- *.yaml *.tgz *.spdx.json >SHA256SUMS)
  TIMED_LINES+=("$(printf '%-50s %s' total "$(seconds_since "$start")")")
  timed_summary
  log "released kea $VERSION to $REGISTRY (pushed to $PUSH_TO); files in $OUT"
}

main
