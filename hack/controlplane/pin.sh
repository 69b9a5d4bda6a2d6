#!/usr/bin/env bash
# Re-pin the control plane to another Kubernetes release, e.g. `./pin.sh v1.36.1`.
# Every k8s.io staging module that k8s.io/kubernetes requires at v0.0.0 is replaced by its
# published v0.X.Y, and etcd follows the version that release requires. Commit go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")"
k8s=${1:?usage: pin.sh v1.X.Y}
staging="v0.${k8s#v1.}"
proxy=$(go env GOPROXY); proxy=${proxy%%,*}
mod=$(curl -fsSL "$proxy/k8s.io/kubernetes/@v/$k8s.mod")
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' <<<"$mod")
go_line=$(awk '$1 == "go" {print $2; exit}' <<<"$mod")
cat > go.mod <<MOD
// Builds the real kube-apiserver and etcd used by the integration tests.
// Re-pin with ./pin.sh v1.X.Y; hack/build-controlplane.sh rebuilds when this file changes.
module paddock.dev/hack/controlplane

go $go_line
MOD
awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' <<<"$mod" |
  while read -r m; do go mod edit -replace="$m=$m@$staging"; done
go mod edit -require="k8s.io/kubernetes@$k8s" -require="go.etcd.io/etcd/server/v3@$etcd"
go mod tidy
echo "pinned Kubernetes $k8s (staging $staging), etcd $etcd"
