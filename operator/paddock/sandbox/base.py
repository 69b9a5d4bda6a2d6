"""What every tool shares: the failure type, the per-call context, path resolution."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path


class ToolFailure(Exception):
    """The tool ran but could not do what was asked. The message becomes an error tool result
    that the model reads, so it says what went wrong and, where useful, what to do instead."""


@dataclass
class CallContext:
    """One execution of a tool call."""

    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by `POST /v1/calls/{id}/cancel`; only tools that can run long watch it."""
    cancelled: bool = False
    """Set by a tool that stopped early because of `cancel_requested`."""


def resolve(workdir: Path, path: str) -> Path:
    """`path` made absolute: `~` expanded, relative paths taken from the workdir, `..` folded.

    Not confined to the workdir: bash can reach the whole file system anyway; isolation is
    the pod's job.
    """
    if not path:
        raise ToolFailure("the path is empty")
    return Path(os.path.normpath(workdir / os.path.expanduser(path)))
