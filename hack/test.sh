#!/usr/bin/env bash
# The one test command (README, .ci/run): set up, lint, check layers and types, run the suite.
# Extra arguments go to pytest, e.g. `bash hack/test.sh tests/eventlog -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
# mypy's cache beside the images' (one per machine): a fresh checkout checks incrementally
# instead of from scratch (a minute of a loaded CI machine); the cache validates itself.
MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-${PADDOCK_CACHE:-$HOME/.cache/paddock}/mypy} .venv/bin/mypy
.venv/bin/python hack/gen_crds.py --check
exec .venv/bin/python -m pytest "$@"
