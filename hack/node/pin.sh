#!/usr/bin/env bash
# Re-pins the node's Kubernetes components to the control plane's pin: run
# ../controlplane/pin.sh v1.X.Y first, then this. kube/go.mod takes the same k8s.io/kubernetes
# version and staging replace block, so kubelet, kube-controller-manager, kube-scheduler and
# kube-proxy are always the apiserver's release. Commit kube/go.mod and kube/go.sum.
set -euo pipefail
cd "$(dirname "$0")/kube"
cp_mod=../../controlplane/go.mod
k8s=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$cp_mod")
go_line=$(awk '$1 == "go" {print $2; exit}' "$cp_mod")
cat > go.mod <<MOD
// kubelet, kube-controller-manager, kube-scheduler and kube-proxy of the one-node cluster, at the
// control plane's pin. Re-pin with ../../controlplane/pin.sh v1.X.Y, then ../pin.sh.
module paddock.dev/hack/node/kube

go $go_line
MOD
grep -E '^replace k8s\.io/' "$cp_mod" | while read -r _ m _ target version; do
  go mod edit -replace="$m=$target@$version"
done
go mod edit -require="k8s.io/kubernetes@$k8s"
GOFLAGS=-mod=mod go mod tidy
echo "node pinned to Kubernetes $k8s"
