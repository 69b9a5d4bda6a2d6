"""The `bash` tool: each call a fresh `bash -c` in its own process group, with a clean
environment and the working directory carried from one call to the next."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shlex
import signal
import uuid
from pathlib import Path

from paddock.sandbox.base import CallContext, ToolFailure
from paddock.sandbox.packages import PackagePlan
from paddock.sandbox.procs import group_members, kill_group, run_in_group

OUTPUT_LIMIT = 100 * 1024
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOOPBACK = "localhost,127.0.0.1,::1"


class CommandEnvironment:
    """The environment of every command the sandbox runs, built from scratch: PATH, HOME,
    LANG, TERM and, once bound, the proxy variables. Nothing of the server's own
    environment leaks into it."""

    def __init__(self, packages: PackagePlan | None = None) -> None:
        self.home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        path = os.environ.get("PATH") or _DEFAULT_PATH
        extra: dict[str, str] = {}
        if packages is not None:
            # The Environment's packages come first: what the Environment asked for wins.
            path = os.pathsep.join([*map(str, packages.bin_dirs), path])
            extra = packages.command_env()
        self._base = {"PATH": path, "HOME": self.home, "LANG": "C.UTF-8", "TERM": "dumb", **extra}
        self._proxy: dict[str, str] = {}

    def use_proxy(self, url: str) -> None:
        """Send all HTTP(S) egress through `url` (credentials included); loopback stays direct."""
        self._proxy = {
            name: value
            for upper, value in (("HTTP_PROXY", url), ("HTTPS_PROXY", url), ("NO_PROXY", _LOOPBACK))
            for name in (upper, upper.lower())
        }

    def variables(self) -> dict[str, str]:
        """A fresh copy, safe to extend."""
        return {**self._base, **self._proxy}


class Shell:
    """Runs bash commands for the `bash` tool.

    A command that exits leaves its background jobs running (their later output is
    discarded); `restart` kills them. A command that times out or is cancelled loses its
    whole process group. The working directory a command ends in is where the next starts.
    """

    def __init__(self, workdir: Path, env: CommandEnvironment, scratch: Path) -> None:
        self._workdir = workdir
        self._env = env
        self._scratch = scratch
        self._cwd = workdir
        self._background: set[int] = set()

    async def run(self, command: str, time_limit: float, ctx: CallContext) -> tuple[str, bool]:
        """Run `command`; returns the text for the model and whether it is an error (timeout
        or cancel; a non-zero exit is not an error, its code is in the text)."""
        cwd, notice = self._cwd, ""
        if not cwd.is_dir():
            cwd, notice = (
                self._workdir,
                f"[{self._cwd} no longer exists; running in {self._workdir}]\n",
            )
            self._cwd = cwd
        if not cwd.is_dir():
            raise ToolFailure(f"the working directory {cwd} does not exist")
        trailer = self._scratch / uuid.uuid4().hex
        # The EXIT trap records where the shell ended up, even after `exit n`; a killed
        # shell records nothing and the directory stays as it was.
        script = f"trap 'pwd -P >{shlex.quote(str(trailer))}' EXIT\n{command}"
        try:
            outcome = await run_in_group(
                ["bash", "--noprofile", "--norc", "-c", script],
                cwd=cwd,
                env=self._env.variables(),
                time_limit=time_limit,
                output_limit=OUTPUT_LIMIT,
                cancel=ctx.cancel_requested,
            )
        finally:
            self._follow(trailer)
        ctx.cancelled = outcome.cancelled
        if outcome.cancelled:
            status, is_error = "[cancelled: the command and its process group were killed]", True
        elif outcome.timed_out:
            status = (
                f"[timed out after {time_limit:g} s: the command and its process group were killed]"
            )
            is_error = True
        elif outcome.returncode < 0:
            status, is_error = f"[killed by signal {_signal_name(-outcome.returncode)}]", False
        else:
            status, is_error = f"[exit code {outcome.returncode}]", False
        if group_members(outcome.pgid):
            self._background.add(outcome.pgid)
        output = outcome.output
        if output and not output.endswith("\n"):
            output += "\n"
        return f"{notice}{output}{status}", is_error

    async def restart(self) -> str:
        """Kill every background job of earlier calls and go back to the workdir."""
        await self.close()
        self._cwd = self._workdir
        return (
            f"bash restarted: background jobs stopped, working directory reset to {self._workdir}"
        )

    async def close(self) -> None:
        """Kill every background job of earlier calls."""
        groups, self._background = self._background, set()
        await asyncio.gather(*(kill_group(pgid) for pgid in groups))

    def _follow(self, trailer: Path) -> None:
        with contextlib.suppress(OSError):
            where = Path(trailer.read_text().strip())
            trailer.unlink()
            if where.is_absolute() and where.is_dir():
                self._cwd = where


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
