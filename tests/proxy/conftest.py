"""Fixtures of the credential proxy tests (the classes live in `tests.proxy.support`)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.proxy.support import GitServer, Upstream

from paddock.testing.oauth import AuthorizationServer, Clock, ProtectedServer
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


@pytest.fixture
def clock() -> Clock:
    """The one clock of the OAuth tests: the authorization server's and the proxy's."""
    return Clock()


@pytest.fixture
async def auth_server(clock: Clock) -> AsyncIterator[AuthorizationServer]:
    server = await AuthorizationServer(clock=clock).start()
    yield server
    await server.close()


@pytest.fixture
async def protected(auth_server: AuthorizationServer) -> AsyncIterator[ProtectedServer]:
    """An MCP-like server accepting the authorization server's live access tokens."""
    server = await ProtectedServer(valid=auth_server.valid).start()
    yield server
    await server.close()
