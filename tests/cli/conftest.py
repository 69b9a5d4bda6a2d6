"""Support of the CLI tests (which use the gateway `stack` of tests/conftest.py): a runner for
the `paddock` console script as a subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.gateway.stack import Stack, Tenant

PADDOCK = Path(sys.executable).parent / "paddock"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli_env(stack: Stack, tenant: Tenant | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PADDOCK_URL": stack.url,
        "PADDOCK_API_KEY": (tenant or stack.a).key,
        "COLUMNS": "100",
    }


async def paddock(stack: Stack, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the console script to its end (the gateway keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        str(PADDOCK),
        *args,
        env=env or cli_env(stack),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())
