"""As PID 1 of its PID namespace (a container without an init), the server reaps orphans and
forwards SIGTERM. Runs the server under `unshare --pid`; skipped where that is not allowed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from paddock.testing.sandbox import RunningSandbox

# unshare forks the server as PID 1 of a new namespace (and SIGTERMs it if unshare dies).
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM")
ZOMBIES = "cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l"


def namespaces_allowed() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def only_child(pid: int) -> int:
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


@pytest.mark.skipif(not namespaces_allowed(), reason="cannot create PID namespaces here")
async def test_as_pid_1_the_server_reaps_orphans_and_stops_on_sigterm(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox(wrapper=UNSHARE)
    async with server.client() as client:

        async def bash(command: str, timeout_ms: int = 10_000) -> str:
            return (await client.call("bash", {"command": command, "timeout_ms": timeout_ms})).text

        assert "paddock.sandbox" in await bash("tr '\\0' ' ' < /proc/1/cmdline")
        # Orphans: double-forked jobs that exit later, and the children of a killed group.
        await bash("for i in 1 2 3; do ( (sleep 0.3 &) & ); done")
        await bash("sleep 300 & sleep 300 & sleep 300", timeout_ms=500)
        await bash("sleep 0.6")
        assert await bash(ZOMBIES) == "0\n[exit code 0]"

    # unshare ignores SIGTERM; signal the namespace's PID 1, which passes it to the server.
    os.kill(only_child(server.process.pid), signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
