"""Free loopback ports, parent-bound children for locally started services, and the one way
tests and demos wait for something: `wait_until` (`wait_until_async` in an event loop)."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def _set_parent_death_signal() -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for a service's process: SIGTERM it when the process that started it
    dies, however it dies (SIGKILL included), so no service outlives a demo or a test run.
    The kernel ties this to the starting *thread*, so it is set only from the main thread
    (a service a worker thread starts would die with that thread)."""
    if threading.current_thread() is threading.main_thread():
        return _set_parent_death_signal
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something true, and return that.

    An exception from ``check`` counts as "not yet" (a service still starting); the last one
    is reported if ``timeout`` seconds pass, in a TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: _Last = _Last()
    while True:
        try:
            if result := check():
                return result
            last.result = result
        except Exception as exc:
            last.error = exc
        if time.monotonic() >= deadline:
            raise last.timeout(what, timeout)
        time.sleep(interval)


@overload
async def wait_until_async(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 (the same call as `wait_until`)
    what: str,
    interval: float = 0.05,
) -> T: ...
@overload
async def wait_until_async(
    check: Callable[[], T],
    *,
    timeout: float,  # noqa: ASYNC109
    what: str,
    interval: float = 0.05,
) -> T: ...
async def wait_until_async(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout: float,  # noqa: ASYNC109 (the same call as `wait_until`)
    what: str,
    interval: float = 0.05,
) -> T:
    """`wait_until` for an event loop: ``check`` may be a coroutine function, and the loop
    keeps running between tries."""
    deadline = time.monotonic() + timeout
    last: _Last = _Last()
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            last.result = result
        except Exception as exc:
            last.error = exc
        if time.monotonic() >= deadline:
            raise last.timeout(what, timeout)
        await asyncio.sleep(interval)


class _Last:
    """What the last try of a wait saw, for the message when it times out."""

    def __init__(self) -> None:
        self.result: object = None
        self.error: Exception | None = None

    def timeout(self, what: str, timeout: float) -> TimeoutError:
        seen = f"last error: {self.error!r}" if self.error else f"last result: {self.result!r}"
        if len(seen) > 2000:
            seen = seen[:2000] + "…"
        return TimeoutError(f"timed out after {timeout:g}s waiting for {what} ({seen})")
