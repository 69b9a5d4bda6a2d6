#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go module proxy into a cache outside the
# repo, keyed by a hash of the pin (go.mod, go.sum, main files): a rebuild happens only
# when the pin changes. Prints the directory that holds the two binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")/controlplane" && pwd)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod")
minor=$(echo "$k8s_version" | cut -d. -f2)
pin=$(cat "$here/go.mod" "$here/go.sum" "$here"/cmd/*/main.go | sha256sum | cut -c1-12)
out="${PADDOCK_CACHE:-$HOME/.cache/paddock}/controlplane/$k8s_version-$pin"
source "$(dirname "$0")/lib/cache.sh"
cached_or_lock "$out" "$out" kube-apiserver etcd
mkdir -p "$out.tmp"
cd "$here"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
echo "build-controlplane: building kube-apiserver $k8s_version and etcd (cold build takes minutes)" >&2
start=$(date +%s)
go build -ldflags "$ldflags" -o "$out.tmp/kube-apiserver" ./cmd/kube-apiserver >&2
go build -ldflags "-s -w" -o "$out.tmp/etcd" ./cmd/etcd >&2
rm -rf "$out"; mv "$out.tmp" "$out"
echo "build-controlplane: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
