"""Free loopback ports, readiness polling and parent-bound children for locally started
services."""

from __future__ import annotations

import ctypes
import signal
import socket
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


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


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns true; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the service is not up yet; keep the last reason
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last_error!r})")
