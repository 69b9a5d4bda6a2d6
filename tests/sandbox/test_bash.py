"""The bash tool: output and exit codes, a clean environment, process-group kills on timeout
and cancel (proved by pid checks), bounded output, call-id deduplication, and the working
directory carried from call to call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paddock.sandbox import SandboxClient, SandboxUnavailable
from paddock.testing.ports import wait_until_async
from paddock.testing.sandbox import RunningSandbox


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (dead, merely unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def written_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


async def pids_in(path: Path, count: int) -> list[int]:
    """The pids a command wrote to `path`, once it has written `count` of them."""
    return await wait_until_async(
        lambda: len(pids := written_pids(path)) >= count and pids,
        timeout=10,
        what=f"{path} to hold {count} pids",
    )


# Children, grandchildren, a double-forked orphan, a nohup'd job, and a job that ignores
# SIGTERM (so only SIGKILL ends it); every pid lands in ./pids. None leaves the group.
FORKING = """
sleep 300 & echo $! >> pids
(sleep 300 & echo $! >> pids; wait) &
bash -c 'sleep 300 & echo $! >> pids; wait' &
( (sleep 300 & echo $! >> pids) & )
nohup sleep 300 >/dev/null 2>&1 & echo $! >> pids
bash -c 'trap "" TERM; sleep 300 & echo $! >> pids; wait' &
echo $$ >> pids
echo started
sleep 300
"""
FORKED = 7


async def test_output_is_interleaved_and_the_exit_code_reported(client: SandboxClient) -> None:
    result = await client.call("bash", {"command": "echo one; echo two >&2; echo three"})
    assert not result.is_error
    assert result.text == "one\ntwo\nthree\n[exit code 0]"


async def test_a_failing_command_is_not_an_error_but_says_its_exit_code(
    client: SandboxClient,
) -> None:
    result = await client.call("bash", {"command": "echo nope >&2; exit 3"})
    assert not result.is_error
    assert result.text == "nope\n[exit code 3]"
    killed = await client.call("bash", {"command": "kill -9 $$"})
    assert not killed.is_error
    assert killed.text == "[killed by signal SIGKILL]"


async def test_stdin_is_empty(client: SandboxClient) -> None:
    result = await client.call("bash", {"command": "cat; echo read-done", "timeout_ms": 5000})
    assert result.text == "read-done\n[exit code 0]"


async def test_the_environment_is_built_from_scratch(
    client: SandboxClient, sandbox: RunningSandbox
) -> None:
    result = await client.call("bash", {"command": "env"})
    names = {line.split("=", 1)[0] for line in result.text.splitlines()[:-1]}
    # PWD, SHLVL and _ are set by bash itself.
    assert names == {"PATH", "HOME", "LANG", "TERM", "PWD", "SHLVL", "_"}
    assert sandbox.canary not in result.text
    assert f"HOME={sandbox.home}\n" in result.text


async def test_a_timeout_kills_the_whole_process_group(client: SandboxClient, space: Path) -> None:
    started = time.monotonic()
    result = await client.call("bash", {"command": f"cd {space}\n{FORKING}", "timeout_ms": 1500})
    elapsed = time.monotonic() - started
    assert result.is_error
    assert result.text.startswith("started\n")
    assert "[timed out after 1.5 s: the command and its process group were killed]" in result.text
    # 1.5 s, the SIGTERM grace for the process that ignores it, then SIGKILL.
    assert elapsed < 8
    pids = await pids_in(space / "pids", FORKED)
    assert [pid for pid in pids if alive(pid)] == []


async def test_cancel_kills_the_whole_process_group(client: SandboxClient, space: Path) -> None:
    call = asyncio.create_task(
        client.call("bash", {"command": f"cd {space}\n{FORKING}"}, call_id="toolu_cancel")
    )
    pids = await pids_in(space / "pids", FORKED)
    assert all(alive(pid) for pid in pids)

    assert await client.cancel("toolu_cancel") is True
    # cancel returns once the group is gone.
    assert [pid for pid in pids if alive(pid)] == []
    result = await call
    assert result.is_error
    assert "[cancelled: the command and its process group were killed]" in result.text
    assert await client.cancel("toolu_cancel") is False  # already over


async def test_a_cancel_that_arrives_first_stops_the_call_from_running(
    client: SandboxClient, space: Path
) -> None:
    before = (await client.stats()).total
    assert await client.cancel("toolu_early") is True
    result = await client.call("bash", {"command": f"touch {space}/ran"}, call_id="toolu_early")
    assert result.is_error
    assert "cancelled before it started" in result.text
    assert not (space / "ran").exists()
    assert (await client.stats()).total == before


async def test_a_call_id_executes_once(client: SandboxClient, space: Path) -> None:
    before = await client.stats()
    command = f"echo ran >> {space}/log; echo $RANDOM"
    first = await client.call("bash", {"command": command}, call_id="toolu_once")
    again = await client.call("bash", {"command": command}, call_id="toolu_once")
    assert again == first

    # Concurrent retries of a running call wait for the one execution.
    slow = f"sleep 0.5; echo ran >> {space}/slow; echo $RANDOM"
    results = await asyncio.gather(
        *(client.call("bash", {"command": slow}, call_id="toolu_slow") for _ in range(3))
    )
    assert results[0] == results[1] == results[2]

    after = await client.stats()
    assert after.executions["bash"] - before.executions.get("bash", 0) == 2
    assert (space / "log").read_text() == "ran\n"
    assert (space / "slow").read_text() == "ran\n"


async def test_a_retry_after_the_caller_went_away_gets_the_recorded_result(
    sandbox: RunningSandbox, space: Path
) -> None:
    command = {"command": f"sleep 1; echo ran >> {space}/log; echo finished"}
    async with sandbox.client() as impatient:
        # The harness gives up (its HTTP timeout) while the command is running.
        with pytest.raises(SandboxUnavailable):
            await impatient.call("bash", command, call_id="toolu_retry", timeout=0.3)
    async with sandbox.client() as retry:
        result = await retry.call("bash", command, call_id="toolu_retry")
    assert result.text == "finished\n[exit code 0]"
    assert (space / "log").read_text() == "ran\n"


async def test_huge_output_is_truncated_and_memory_stays_bounded(
    client: SandboxClient, sandbox: RunningSandbox
) -> None:
    command = "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo END"
    results = await asyncio.gather(*(client.call("bash", {"command": command}) for _ in range(4)))
    for result in results:
        assert not result.is_error
        assert len(result.text) < 105_000
        assert result.text.startswith("xxxx")
        assert "[... output truncated: 9,897,605 of 10,000,005 bytes omitted;" in result.text
        assert result.text.endswith("xxxx\nEND\n[exit code 0]")
    assert await client.ready()
    assert rss_kib(sandbox.process.pid) < 200 * 1024


async def test_background_jobs_outlive_their_call_until_restart(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    async with server.client() as client:
        started = time.monotonic()
        result = await client.call("bash", {"command": "sleep 300 & echo $!"})
        # The job holds the output pipe; the call still returns at once.
        assert time.monotonic() - started < 3
        pid = int(result.text.splitlines()[0])
        assert alive(pid)

        restarted = await client.call("bash", {"restart": True})
        assert not restarted.is_error
        assert "background jobs stopped" in restarted.text
        assert not alive(pid)


async def test_the_working_directory_carries_over(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    workdir = server.workdir.resolve()

    async def bash(command: str) -> str:
        return (await client.call("bash", {"command": command})).text

    async with server.client() as client:
        assert await bash("pwd") == f"{workdir}\n[exit code 0]"
        await bash("mkdir -p a/b && cd a/b")
        assert await bash("pwd") == f"{workdir}/a/b\n[exit code 0]"
        await bash("cd /nonexistent")  # fails: stays where it was
        assert await bash("pwd") == f"{workdir}/a/b\n[exit code 0]"
        await bash("cd .. && exit 4")  # exit still records the directory
        assert await bash("pwd") == f"{workdir}/a\n[exit code 0]"

        await bash(f"rm -rf {workdir}/a")
        fallback = await bash("pwd")
        assert fallback.startswith(f"[{workdir}/a no longer exists; running in {server.workdir}]")

        await bash("cd /tmp")
        restarted = await client.call("bash", {"restart": True, "command": "pwd"})
        assert restarted.text.endswith(f"\n{server.workdir}\n[exit code 0]")
