#!/usr/bin/env bash
# Builds the one-node cluster's binaries from the Go module proxy into a cache outside the repo,
# keyed by a hash of the pins under hack/node/ (go.mod, go.sum, main files): a rebuild happens
# only when a pin changes. Prints the directory, which holds
#   kubelet kube-controller-manager kube-scheduler kube-proxy  (hack/node/kube, the control
#                                                               plane's Kubernetes pin)
#   kube-router                                                (hack/node/kube-router)
#   coredns                                                    (hack/node/coredns)
#   cni/bridge cni/host-local cni/loopback cni/portmap         (hack/node/cni)
#   pause                    (Kubernetes' build/pause/linux/pause.c at the pin, static, by cc)
# kube-apiserver and etcd come from hack/build-controlplane.sh; containerd, runc, iptables and
# ipset from Debian (hack/setup.sh installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")/node" && pwd)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/kube/go.mod")
minor=$(echo "$k8s_version" | cut -d. -f2)
pin=$(cd "$here" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort |
  xargs cat | sha256sum | cut -c1-12)
out="${PADDOCK_CACHE:-$HOME/.cache/paddock}/node/$k8s_version-$pin"
binaries=(kubelet kube-controller-manager kube-scheduler kube-proxy kube-router coredns
  cni/bridge cni/host-local cni/loopback cni/portmap pause)
source "$(dirname "$0")/lib/cache.sh"
cached_or_lock "$out" "$out" "${binaries[@]}"
mkdir -p "$out.tmp/cni"
# Keep what an earlier run of the same pin built (a binary added to the list builds alone).
[[ -d "$out" ]] && cp -a "$out/." "$out.tmp/"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local
echo "build-node: building the node's binaries for $k8s_version (a cold build takes many minutes)" >&2
start=$(date +%s)

k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
cd "$here/kube"
for binary in kubelet kube-controller-manager kube-scheduler kube-proxy; do
  [[ -x "$out.tmp/$binary" ]] || go build -ldflags "$k8s_ldflags" -o "$out.tmp/$binary" "./cmd/$binary" >&2
done

cd "$here/kube-router"
router_version=$(awk '$1 == "github.com/cloudnativelabs/kube-router/v2" {print $2}' go.mod)
[[ -x "$out.tmp/kube-router" ]] || go build -o "$out.tmp/kube-router" -ldflags "-s -w \
 -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$router_version" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router >&2

cd "$here/coredns"
[[ -x "$out.tmp/coredns" ]] || go build -ldflags "-s -w" -o "$out.tmp/coredns" ./cmd/coredns >&2

cd "$here/cni"
for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
  [[ -x "$out.tmp/cni/${plugin#*/}" ]] || go build -ldflags "-s -w" -o "$out.tmp/cni/${plugin#*/}" \
    "github.com/containernetworking/plugins/plugins/$plugin" >&2
done

# The pod sandbox image's binary, as upstream builds it (build/pause/Makefile).
cd "$here/kube"
if [[ ! -x "$out.tmp/pause" ]]; then
  pause_src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  pause_tag=$(awk '$1 == "TAG" {print $3}' "$(dirname "$pause_src")/../Makefile")
  cc -Os -Wall -Werror -static -DVERSION="v$pause_tag" -o "$out.tmp/pause" "$pause_src" >&2
fi

rm -rf "$out"; mv "$out.tmp" "$out"
echo "build-node: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
