#!/usr/bin/env bash
# `make demo`: install what is missing, bring up the whole stack on this machine (control
# plane, Redis, local pod runner, operator, gateway, and the scripted model unless
# ANTHROPIC_API_KEY is set and the API answers), apply examples/hello-agent.yaml and a
# Session, and follow the session with the CLI until it finishes. Needs root (the local pod
# runner makes network namespaces). `--keep` leaves the stack running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
exec .venv/bin/python -m paddock.testing.stack demo "$@"
