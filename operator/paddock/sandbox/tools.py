"""The built-in toolset of `agent_toolset_20260401`: input validation and dispatch.

`Toolbox.run` never raises for anything a tool call can do wrong: bad input, a missing file,
a failing command all become error tool results the model can read and act on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paddock.sandbox import files
from paddock.sandbox.api import ToolResult
from paddock.sandbox.base import CallContext, ToolFailure
from paddock.sandbox.shell import Shell

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000


class _Input(BaseModel):
    # Fields the model adds beyond the schema are ignored rather than refused.
    model_config = ConfigDict(extra="ignore")


class BashInput(_Input):
    command: str | None = None
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, ge=1, le=MAX_TIMEOUT_MS)
    restart: bool = False

    @model_validator(mode="after")
    def _something_to_do(self) -> BashInput:
        if not self.restart and not (self.command and self.command.strip()):
            raise ValueError("command is required (or restart: true)")
        return self


class ReadInput(_Input):
    file_path: str = Field(min_length=1)
    view_range: tuple[int, int] | None = None


class WriteInput(_Input):
    file_path: str = Field(min_length=1)
    content: str


class EditInput(_Input):
    file_path: str = Field(min_length=1)
    old_string: str
    new_string: str
    replace_all: bool = False


class GlobInput(_Input):
    pattern: str = Field(min_length=1)
    path: str | None = None


class GrepInput(_Input):
    pattern: str = Field(min_length=1)
    path: str | None = None
    glob: str | None = None


class Toolbox:
    """The tools of one sandbox, working in `workdir`."""

    def __init__(self, workdir: Path, shell: Shell) -> None:
        self._workdir = workdir
        self._shell = shell
        self._tools: dict[
            str, tuple[type[_Input], Callable[[Any, CallContext], Awaitable[ToolResult]]]
        ] = {
            "bash": (BashInput, self._bash),
            "read": (ReadInput, self._read),
            "write": (WriteInput, self._write),
            "edit": (EditInput, self._edit),
            "glob": (GlobInput, self._glob),
            "grep": (GrepInput, self._grep),
        }
        self.names = frozenset(self._tools)

    async def run(self, name: str, raw: dict[str, Any], ctx: CallContext) -> ToolResult:
        """Execute tool `name` (one of `names`) and return its result; errors are results."""
        model, handler = self._tools[name]
        try:
            args = model.model_validate(raw)
        except ValidationError as exc:
            return ToolResult.of(f"{name}: invalid input: {_explain(exc)}", is_error=True)
        try:
            return await handler(args, ctx)
        except ToolFailure as exc:
            return ToolResult.of(f"{name}: {exc}", is_error=True)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            return ToolResult.of(f"{name}: {exc.strerror or exc}{where}", is_error=True)
        except Exception:
            log.exception("tool %s failed", name)
            return ToolResult.of(f"{name}: internal error in the sandbox (logged)", is_error=True)

    async def _bash(self, args: BashInput, ctx: CallContext) -> ToolResult:
        prefix = ""
        if args.restart:
            prefix = await self._shell.restart()
            if not (args.command and args.command.strip()):
                return ToolResult.of(prefix)
            prefix += "\n"
        assert args.command is not None  # checked by BashInput
        text, is_error = await self._shell.run(args.command, args.timeout_ms / 1000, ctx)
        return ToolResult.of(prefix + text, is_error=is_error)

    async def _read(self, args: ReadInput, ctx: CallContext) -> ToolResult:
        return await _in_thread(files.read, self._workdir, args.file_path, args.view_range)

    async def _write(self, args: WriteInput, ctx: CallContext) -> ToolResult:
        return await _in_thread(files.write, self._workdir, args.file_path, args.content)

    async def _edit(self, args: EditInput, ctx: CallContext) -> ToolResult:
        return await _in_thread(
            files.edit,
            self._workdir,
            args.file_path,
            args.old_string,
            args.new_string,
            args.replace_all,
        )

    async def _glob(self, args: GlobInput, ctx: CallContext) -> ToolResult:
        return await _in_thread(files.glob, self._workdir, args.pattern, args.path)

    async def _grep(self, args: GrepInput, ctx: CallContext) -> ToolResult:
        return await _in_thread(files.grep, self._workdir, args.pattern, args.path, args.glob)


async def _in_thread(function: Callable[..., str], *args: Any) -> ToolResult:
    # File tools block on disk; a thread keeps the server answering meanwhile.
    return ToolResult.of(await asyncio.to_thread(function, *args))


def _explain(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
        for error in exc.errors()
    )
