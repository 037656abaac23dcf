#!/bin/bash
# Imports /kind/images/*.tar into containerd's k8s.io namespace (see
# kea-preload-images.service). Idempotent: a node's /var is fresh, so this runs once
# per node; a restart re-imports, which containerd skips quickly.
set -euo pipefail
for _ in $(seq 60); do
  ctr --namespace=k8s.io version >/dev/null 2>&1 && break
  sleep 0.5
done
shopt -s nullglob
for tarball in /kind/images/*.tar; do
  echo "importing $tarball"
  ctr --namespace=k8s.io images import --all-platforms --digests "$tarball"
done
ctr --namespace=k8s.io images list -q
