"""Worker processes forked from one warm parent.

Importing the harness costs about 3 s of CPU (mostly the `anthropic` SDK's types). A worker
process started afresh after a crash pays it again, on cores its surviving peers need for
their heartbeats, and takes over nothing until it is done. So `python -m paddock.harness`
imports everything once in a parent that only supervises, and forks the worker processes
from it: a worker that dies is replaced by a fork that imports nothing again.

- A child that is killed (SIGKILL, the OOM killer) or fails after running a while is
  replaced at once, in the same slot; first ``on_death(pid)`` runs (the harness hands the
  dead worker's sessions back, so they are resumed now instead of after the lease TTL).
- A child that fails on its own within ``QUICK_FAILURE_S`` of its start (a broken
  configuration, Redis refusing the worker's user) ends the parent with its exit code, so
  the container restarts with the kubelet's back-off instead of forking in a loop.
- SIGTERM or SIGINT to the parent is passed on to the children (each hands its sessions
  back), and the parent exits when they have.
- A child dies with its parent (``PR_SET_PDEATHSIG`` on Linux): SIGKILL to the parent
  leaves no worker running unsupervised.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

QUICK_FAILURE_S = 10.0
"""A child that exits with an error sooner than this after its start ends the parent."""

_PR_SET_PDEATHSIG = 1


def run_forked(
    processes: int,
    child: Callable[[int], int],
    on_death: Callable[[int], None] | None = None,
) -> int:
    """Run ``child(slot)`` in ``processes`` forked processes (slots 0..processes-1), replacing
    each that dies, until SIGTERM/SIGINT; the exit code for the parent. ``on_death(pid)``
    runs in the parent for each child that died (reaped, so it can no longer write) before
    its replacement is forked; it must leave no thread or socket open behind it."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    parent = os.getpid()
    children: dict[int, tuple[int, float]] = {}
    """pid -> (slot, monotonic time it was forked)."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    def fork(slot: int) -> None:
        _flush()
        pid = os.fork()
        if pid == 0:
            _child(parent, slot, child)
        children[pid] = (slot, time.monotonic())

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Everything imported so far stays shared with the children instead of being copied
    # page by page when the collector touches it.
    gc.freeze()
    for slot in range(processes):
        fork(slot)
    exit_code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot, forked = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            exit_code = max(exit_code, code)
            continue
        lived = time.monotonic() - forked
        if code > 0 and lived < QUICK_FAILURE_S:
            log.error(
                "worker process %d (slot %d) failed with %d after %.1f s; stopping",
                pid, slot, code, lived,
            )  # fmt: skip
            stop(signal.SIGTERM, None)
            exit_code = code
            continue
        log.warning(
            "worker process %d (slot %d) ended (%s) after %.1f s; forking a replacement",
            pid, slot, _describe(code), lived,
        )  # fmt: skip
        if on_death is not None:
            try:
                on_death(pid)
            except Exception:
                log.exception("after worker process %d ended", pid)
        fork(slot)
    return exit_code


def _child(parent: int, slot: int, child: Callable[[int], int]) -> None:
    """The forked side: never returns into the parent's loop."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with(parent)
        code = child(slot)
    except BaseException:
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _die_with(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent may have died before the line above took effect.
    if os.getppid() != parent:
        os._exit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
