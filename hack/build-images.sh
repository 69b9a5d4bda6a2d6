#!/usr/bin/env bash
# Builds the paddock and sandbox images without Docker: a Debian base made by mmdebstrap from
# the Debian archive, the Paddock wheel and its dependencies from PyPI, assembled as OCI image
# archives that `ctr images import` and `docker load` take (hack/images/build.py says how).
# Output, cached outside the repo and keyed by a hash of the inputs (rebuilt only when
# pyproject.toml, operator/, hack/images/, this script or images/*/Dockerfile change):
#   ${PADDOCK_CACHE:-$HOME/.cache/paddock}/images/<hash>/{paddock,sandbox}.tar
# Prints that directory. Needs root (mmdebstrap --mode=root, chroot, overlay mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in mmdebstrap unshare chroot tar; do
  command -v "$tool" >/dev/null || {
    echo "build-images: no '$tool' on PATH (bash hack/setup.sh installs it)" >&2
    exit 1
  }
done
[[ $(id -u) == 0 ]] || { echo "build-images: must run as root" >&2; exit 1; }
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
exec "$python" hack/images/build.py "$@"
