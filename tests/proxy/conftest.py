"""Fixtures of the credential proxy tests (the classes live in `tests.proxy.support`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.proxy.support import GitServer, Upstream

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


@pytest.fixture(scope="module")
def module_secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return Secrets(tmp_path_factory.mktemp("proxy-secrets"))


@pytest.fixture(scope="module")
def git_server(
    tmp_path_factory: pytest.TempPathFactory, module_secrets: Secrets
) -> Iterator[GitServer]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    basic = module_secrets.values()["git_token_basic"]
    with GitServer(tmp_path_factory.mktemp("git-host"), f"Basic {basic}") as server:
        server.create_repo("repo")
        yield server
