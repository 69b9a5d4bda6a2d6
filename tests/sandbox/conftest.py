"""Real sandbox servers (`python -m paddock.sandbox` subprocesses on free loopback ports).

`sandbox` (tests/conftest.py) is one unbound server shared by the tool tests of a module
(each test works in its own directory, `space`); `start_sandbox` starts fresh ones for tests
that bind or need flags.
Every server is started with a canary variable in its environment that must never reach
a command (see `paddock.testing.sandbox`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from paddock.sandbox import SandboxClient
from paddock.testing.sandbox import RunningSandbox, launch


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[Callable[..., RunningSandbox]]:
    """Start fresh servers (stopped at the end of the test): `start_sandbox(*flags)`."""
    started: list[RunningSandbox] = []

    def start(
        *args: str,
        workdir: Path | None = None,
        wrapper: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> RunningSandbox:
        base = tmp_path / f"sandbox-{len(started)}"
        running = launch(base, *args, workdir=workdir, wrapper=wrapper, env=env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[SandboxClient]:
    async with sandbox.client() as sandbox_client:
        yield sandbox_client


@pytest.fixture
def space(sandbox: RunningSandbox, request: pytest.FixtureRequest) -> Path:
    """An empty directory of the shared sandbox's workdir, for this test only."""
    path = sandbox.workdir / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    path.mkdir()
    return path
