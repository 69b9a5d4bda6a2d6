#!/usr/bin/env bash
# Builds the helm binary (upstream cmd/helm at the version pinned in hack/helm/go.mod) from the
# Go module proxy into a cache outside the repo, keyed by a hash of the pin (go.mod, go.sum):
# a rebuild happens only when the pin changes. Prints the path of the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")/helm" && pwd)
helm_version=$(awk '$1 == "helm.sh/helm/v4" {print $2}' "$here/go.mod")
pin=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
out="${PADDOCK_CACHE:-$HOME/.cache/paddock}/helm/$helm_version-$pin"
source "$(dirname "$0")/lib/cache.sh"
cached_or_lock "$out/helm" "$out" helm
mkdir -p "$out.tmp"
cd "$here"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local
# What helm's own Makefile stamps for a release build.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version \
 -X helm.sh/helm/v4/internal/version.metadata= \
 -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
echo "build-helm: building helm $helm_version (cold build takes about two minutes)" >&2
start=$(date +%s)
go build -ldflags "$ldflags" -o "$out.tmp/helm" helm.sh/helm/v4/cmd/helm >&2
rm -rf "$out"; mv "$out.tmp" "$out"
echo "build-helm: built in $(( $(date +%s) - start ))s" >&2
echo "$out/helm"
