"""Resources mounted after the bind, and the session's outputs directory.

The harness mounts a session's Files API files (and resources added while the session
runs) before the next tool call: it streams each file's bytes into `PUT /v1/mounts/file`,
and has repositories added after the bind cloned by `POST /v1/mounts/repository`.
Each mount names a key; a key mounted once is not mounted again, so a worker that resumes
the session after a crash does not overwrite what the agent changed since.

Files the agent leaves below the outputs directory are listed by `GET /v1/outputs` and read
by `GET /v1/outputs/{path}`; the harness copies them to the gateway's file store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from pydantic import Field

from paddock.models import GitRepository
from paddock.sandbox.api import FileStatus, RepositoryStatus, Wire

OUTPUTS_LIMIT = 1000
"""The most files `GET /v1/outputs` lists (the first ones, by path)."""


class MountedFile(FileStatus):
    """The outcome of `PUT /v1/mounts/file`."""

    skipped: bool = False
    """The key was mounted before: nothing was written."""


class MountRepository(Wire):
    """Body of `POST /v1/mounts/repository`."""

    key: str = Field(min_length=1, max_length=2048)
    repository: GitRepository


class MountedRepository(RepositoryStatus):
    """The outcome of `POST /v1/mounts/repository`."""

    skipped: bool = False
    """The key was mounted before: nothing was cloned."""


class OutputFile(Wire):
    path: str
    """Below the outputs directory, `/`-separated."""
    size: int
    mtime_ns: int


class Outputs(Wire):
    """Response of `GET /v1/outputs`."""

    directory: str
    files: list[OutputFile] = Field(default_factory=list)
    truncated: bool = False


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # its directory may not even be one
        path.unlink(missing_ok=True)


class Mounts:
    """What was mounted since the sandbox started, and the outputs directory."""

    def __init__(self, outputs_dir: Path) -> None:
        self.outputs_dir = outputs_dir
        self._keys: set[str] = set()
        self._lock = asyncio.Lock()

    async def mount_file(self, key: str, path: Path, chunks: AsyncIterator[bytes]) -> MountedFile:
        """Write ``chunks`` to ``path`` (through a temporary file in its directory, so the
        agent never sees half of it) unless ``key`` was mounted already."""
        async with self._lock:
            if key in self._keys:
                return MountedFile(path=str(path), ok=True, skipped=True)
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
            try:
                await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                out = await asyncio.to_thread(temporary.open, "xb")
                with out:
                    async for chunk in chunks:
                        await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(os.replace, temporary, path)
            except OSError as exc:
                _remove(temporary)
                return MountedFile(path=str(path), ok=False, error=f"{exc.strerror or exc}")
            except BaseException:
                _remove(temporary)
                raise
            self._keys.add(key)
            return MountedFile(path=str(path), ok=True)

    async def mount_repository(
        self,
        key: str,
        repository: GitRepository,
        clone: Callable[[GitRepository], Awaitable[RepositoryStatus]],
    ) -> MountedRepository:
        """Clone ``repository`` with ``clone`` unless ``key`` was mounted already."""
        async with self._lock:
            if key in self._keys:
                return MountedRepository(
                    url=repository.url,
                    mount_path=repository.mount_path or "",
                    ok=True,
                    skipped=True,
                )
            status = await clone(repository)
            self._keys.add(key)
            return MountedRepository(**status.model_dump())

    def outputs(self) -> Outputs:
        """Regular files below the outputs directory (not following links out of it)."""
        root = self.outputs_dir
        found: list[OutputFile] = []
        truncated = False
        for directory, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory) / name
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if not path.is_file() or path.is_symlink():
                    continue
                if len(found) >= OUTPUTS_LIMIT:
                    truncated = True
                    break
                relative = path.relative_to(root).as_posix()
                found.append(
                    OutputFile(path=relative, size=info.st_size, mtime_ns=info.st_mtime_ns)
                )
            if truncated:
                break
        return Outputs(directory=str(root), files=found, truncated=truncated)

    def output_path(self, relative: str) -> Path | None:
        """The regular file ``relative`` names below the outputs directory, or None."""
        root = self.outputs_dir.resolve()
        path = (root / relative).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path
