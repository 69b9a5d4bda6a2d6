"""Fixtures of the credential proxy tests (the classes live in `tests.proxy.support`; the git
host and `module_secrets` are the shared ones of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.proxy.support import Upstream

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
