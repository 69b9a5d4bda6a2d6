#!/usr/bin/env bash
# `make cluster`: install what is missing, bring up the one-node cluster (paddock.testing.node:
# kubelet, containerd + runc, kube-proxy, kube-router, CoreDNS), import the real images
# (hack/build-images.sh, no Docker), `helm install` charts/paddock, apply examples/ and follow
# the example session with the paddock CLI to end_turn in real containers. Needs root.
# `--keep` leaves it running and prints KUBECONFIG, PADDOCK_URL and PADDOCK_API_KEY.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh >&2
exec .venv/bin/python -m paddock.testing.cluster demo "$@"
