.PHONY: demo cluster test crds lint
# Bring up the local stack and run a demo session.
demo:
	bash hack/demo.sh $(ARGS)
# The chart on a real one-node cluster (kubelet, containerd, runc), a session to end_turn.
cluster:
	bash hack/cluster.sh $(ARGS)
# Install everything the suite needs, then lint and run every test.
test:
	bash hack/test.sh
# Regenerate crds/ and docs/resources.md from the Pydantic models.
crds:
	.venv/bin/python hack/gen_crds.py
# Style, the import layers and the types (mypy's settings are in pyproject.toml).
lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports && .venv/bin/mypy
