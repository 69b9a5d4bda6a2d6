"""Running a command in its own process group: bounded output, a deadline, a kill switch.

Every command starts a new session (`setsid`), so its process group holds the command and
everything it forks that does not deliberately leave (another `setsid`). Killing the group
therefore reaches grandchildren that were put in the background or whose parent died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TERM_GRACE = 1.0
"""Seconds a group gets between SIGTERM and SIGKILL."""
_KILL_WAIT = 2.0
_POLL = 0.02
_DRAIN = 0.2
"""Seconds to wait for the end of output after the command exited; a background job that
still holds the pipe must not hold the call."""


class BoundedOutput:
    """Keeps the first and the last `limit / 2` bytes of a stream and counts what it drops,
    so a command printing gigabytes costs at most `limit` bytes of memory."""

    def __init__(self, limit: int) -> None:
        self._head_cap = limit - limit // 2
        self._tail_cap = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self.dropped = 0

    def append(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if len(data) >= self._tail_cap:
            self.dropped += len(self._tail) + len(data) - self._tail_cap
            self._tail = bytearray(data[len(data) - self._tail_cap :])
            return
        self._tail += data
        excess = len(self._tail) - self._tail_cap
        if excess > 0:
            del self._tail[:excess]
            self.dropped += excess

    def render(self) -> str:
        """The kept output as text, with a notice where bytes were dropped."""
        if not self.dropped:
            return (self._head + self._tail).decode(errors="replace")
        head = self._head.decode(errors="replace")
        tail = self._tail.decode(errors="replace")
        notice = (
            f"[... output truncated: {self.dropped:,} of {self.total:,} bytes omitted; "
            f"showing the first {len(self._head):,} and the last {len(self._tail):,} bytes ...]"
        )
        return f"{head}\n{notice}\n{tail}"


class _Capture(asyncio.Protocol):
    """Feeds a pipe into a `BoundedOutput` until the last writer closes it."""

    def __init__(self, output: BoundedOutput, closed: asyncio.Future[None]) -> None:
        self._output: BoundedOutput | None = output
        self._closed = closed

    def detach(self) -> None:
        """Keep reading (so late writers never get SIGPIPE) but throw the data away."""
        self._output = None

    def data_received(self, data: bytes) -> None:
        if self._output is not None:
            self._output.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


@dataclass(frozen=True)
class Outcome:
    """How a command ended."""

    output: str
    """stdout and stderr, interleaved as written, possibly truncated (with a notice)."""
    returncode: int
    """Exit status; negative: killed by that signal."""
    pgid: int
    """The command's process group; background jobs may still live in it."""
    timed_out: bool = False
    cancelled: bool = False


async def run_in_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    time_limit: float,
    output_limit: int,
    cancel: asyncio.Event | None = None,
) -> Outcome:
    """Run `argv` in a new process group with stdin from /dev/null.

    After `time_limit` seconds, or when `cancel` is set, the whole group is killed before this
    returns. When the command exits on its own, what it left in the background keeps running
    and its later output is discarded. Raises OSError when the command cannot be started.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    pgid = proc.pid
    output = BoundedOutput(output_limit)
    closed: asyncio.Future[None] = loop.create_future()
    capture = _Capture(output, closed)
    await loop.connect_read_pipe(lambda: capture, os.fdopen(read_fd, "rb", buffering=0))

    exited = asyncio.ensure_future(proc.wait())
    cancelled = asyncio.ensure_future(cancel.wait()) if cancel else None
    try:
        waiting = {exited} if cancelled is None else {exited, cancelled}
        done, _ = await asyncio.wait(
            waiting, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED
        )
        stopped = exited not in done
        if stopped:
            await kill_group(pgid)
            await exited
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), _DRAIN)
    except asyncio.CancelledError:
        # The server is shutting down: leave nothing behind.
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
        raise
    finally:
        if cancelled is not None:
            cancelled.cancel()
        capture.detach()
    was_cancelled = stopped and cancelled is not None and cancelled in done
    return Outcome(
        output=output.render(),
        returncode=exited.result(),
        pgid=pgid,
        timed_out=stopped and not was_cancelled,
        cancelled=was_cancelled,
    )


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes of group `pgid` (zombies are dead, merely unreaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(b")") + 2 :].split(maxsplit=3)[:3]
        if int(pgrp) == pgid and state != b"Z":
            members.append(int(entry.name))
    return members


async def kill_group(pgid: int, grace: float = TERM_GRACE) -> None:
    """SIGTERM every process of group `pgid`, then SIGKILL what is left after `grace`.

    Returns once no live member is left, or after a bounded wait if the kernel is slow to
    deliver SIGKILL.
    """
    loop = asyncio.get_running_loop()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, _KILL_WAIT)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # a member changed user (setuid); the others were signalled
        deadline = loop.time() + wait
        while group_members(pgid):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(_POLL)
        else:
            return
