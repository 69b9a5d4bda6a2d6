"""tests/node runs on the one-node cluster: the session-scoped `local_node` fixture of
tests/conftest.py (shared with tests/e2e, since only one node runs per machine)."""
