"""Fixtures of the credential proxy tests (the classes live in `tests.proxy.support`; the git
host and `module_secrets` are the shared ones of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.proxy.support import Upstream

from paddock.testing.proxy import Secrets


@pytest.fixture
def secret_files(tmp_path: Path) -> Secrets:
    return Secrets(tmp_path / "secrets")


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def module_upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server
