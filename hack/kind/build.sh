#!/usr/bin/env bash
# Builds kind and kubectl at the versions pinned in hack/kind/go.mod from the Go module proxy
# into a cache outside the repo, keyed by a hash of the pin (go.mod, go.sum, cmd/kubectl):
# a rebuild happens only when the pin changes. Prints the directory that holds the two
# binaries. hack/kind-up.sh uses it only for the tools it does not find on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind_version=$(awk '$1 == "sigs.k8s.io/kind" {print $2}' "$here/go.mod")
kubectl_module=$(awk '$1 == "k8s.io/kubectl" {print $2}' "$here/go.mod") # v0.X.Y
kubectl_version="v1.${kubectl_module#v0.}"
minor=$(echo "$kubectl_version" | cut -d. -f2)
pin=$(cat "$here/go.mod" "$here/go.sum" "$here/cmd/kubectl/main.go" | sha256sum | cut -c1-12)
out="${PADDOCK_CACHE:-$HOME/.cache/paddock}/kind/tools-$kind_version-$pin"
source "$here/../lib/cache.sh"
cached_or_lock "$out" "$out" kind kubectl
rm -rf "$out.tmp"; mkdir -p "$out.tmp"
cd "$here"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local
echo "kind/build.sh: building kind $kind_version and kubectl $kubectl_version (about a minute cold)" >&2
start=$(date +%s)
go build -ldflags "-s -w" -o "$out.tmp/kind" sigs.k8s.io/kind >&2
# What the Kubernetes release build stamps, so that `kubectl version` tells the truth.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kubectl_version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$kubectl_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
go build -ldflags "$ldflags" -o "$out.tmp/kubectl" ./cmd/kubectl >&2
rm -rf "$out"; mv "$out.tmp" "$out"
echo "kind/build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
