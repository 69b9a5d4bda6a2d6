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
# One suite at a time per machine: the suite's local stacks, pod bridges, network namespaces
# and its one-node cluster are machine-wide, and a second run's clean-up of "stale" ones would
# kill the first run's pods. A second run waits here instead.
lock=${PADDOCK_TEST_LOCK:-/tmp/paddock-tests.lock}
exec 9>"$lock"
if ! flock -n 9; then
    echo "test: another test run holds $lock; waiting for it to end" >&2
    flock 9
fi
exec .venv/bin/python -m pytest "$@"
