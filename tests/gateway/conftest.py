"""Fixtures of the gateway tests: a running gateway (see stack.py) and a sandbox server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from paddock.testing.controlplane import ControlPlane
from paddock.testing.sandbox import RunningSandbox

from .stack import Stack


@pytest.fixture
async def stack(
    control_plane: ControlPlane, redis_url: str, sandbox: RunningSandbox
) -> AsyncIterator[Stack]:
    """A gateway with two tenants, `stack.a` and `stack.b`."""
    running = await Stack(control_plane, redis_url, sandbox).start()
    yield running
    await running.close()
