"""The Files API's storage: a directory per tenant namespace, two files per stored file.

``<root>/<namespace>/<file id>.bin`` holds the content and ``<file id>.json`` its metadata.
Both are written to a temporary name and renamed into place, content first: a file exists
once its metadata does, so a crash or a full disk never leaves a half-written file visible.
Deleting removes the metadata first for the same reason. Blocking calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ValidationError

from paddock.eventlog import new_id
from paddock.gateway.convert.meta import now, parse_time, rfc3339

FILE_PREFIX = "file_"
_FILE_ID = re.compile(r"^file_[0-9A-Za-z]{1,64}$")
_TEMPORARY = ".tmp-"


class FileTooLarge(Exception):
    """An upload went past the store's limit; nothing of it was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the file exceeds {limit} bytes")
        self.limit = limit


class StoredFile(BaseModel):
    """A file's metadata as kept next to its content."""

    id: str
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    created_at: str
    expires_at: str | None = None
    session_id: str | None = None
    """The session whose outputs directory the file came from (its scope)."""
    output_path: str | None = None
    """Its path below the outputs directory."""

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and parse_time(self.expires_at) <= at


class Upload:
    """Content being received. ``write`` counts against the limit as it goes; ``commit``
    makes the file visible; ``discard`` (or leaving ``commit`` uncalled) removes the rest."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.size = 0
        self.id = new_id(FILE_PREFIX)
        self._digest = hashlib.sha256()
        self._temporary = directory / f"{_TEMPORARY}{secrets.token_hex(8)}"
        self._out: BinaryIO | None = None

    async def open(self) -> None:
        def create() -> BinaryIO:
            self.directory.mkdir(parents=True, exist_ok=True)
            return self._temporary.open("xb")

        self._out = await asyncio.to_thread(create)

    async def write(self, chunk: bytes) -> None:
        assert self._out is not None, "open() first"
        self.size += len(chunk)
        if self.size > self.limit:
            await self.discard()
            raise FileTooLarge(self.limit)
        self._digest.update(chunk)
        await asyncio.to_thread(self._out.write, chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    async def commit(self, metadata: StoredFile) -> StoredFile:
        assert self._out is not None, "open() first"
        out, self._out = self._out, None
        content = self.directory / f"{metadata.id}.bin"
        described = self.directory / f"{metadata.id}.json"

        def publish() -> None:
            with out:
                out.flush()
                os.fsync(out.fileno())
            os.replace(self._temporary, content)
            _write_atomically(described, metadata.model_dump_json().encode())

        try:
            await asyncio.to_thread(publish)
        except BaseException:
            await self.discard()
            raise
        return metadata

    async def discard(self) -> None:
        out, self._out = self._out, None

        def remove() -> None:
            if out is not None:
                out.close()
            self._temporary.unlink(missing_ok=True)

        await asyncio.to_thread(remove)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{_TEMPORARY}{secrets.token_hex(8)}")
    try:
        with temporary.open("xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class FileStore:
    """Files of every tenant below ``root``; each file at most ``max_bytes``."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _directory(self, tenant: str) -> Path:
        # Tenants are namespace names (checked at authentication): no separators, no dots.
        return self.root / tenant

    def content_path(self, tenant: str, file_id: str) -> Path:
        return self._directory(tenant) / f"{file_id}.bin"

    async def receive(self, tenant: str) -> Upload:
        upload = Upload(self._directory(tenant), self.max_bytes)
        await upload.open()
        return upload

    async def get(self, tenant: str, file_id: str) -> StoredFile | None:
        """The file's metadata; None for an id that is not one of ``tenant``'s live files."""
        if not _FILE_ID.match(file_id):
            return None
        path = self._directory(tenant) / f"{file_id}.json"
        stored = await asyncio.to_thread(_read_metadata, path)
        if stored is not None and stored.expired(now()):
            await self.delete(tenant, file_id)
            return None
        return stored

    async def list(self, tenant: str) -> list[StoredFile]:
        """Every live file of ``tenant``, in no particular order."""
        at = now()

        def read_all() -> list[StoredFile]:
            directory = self._directory(tenant)
            if not directory.is_dir():
                return []
            found = (_read_metadata(path) for path in directory.glob(f"{FILE_PREFIX}*.json"))
            return [stored for stored in found if stored is not None and not stored.expired(at)]

        return await asyncio.to_thread(read_all)

    async def delete(self, tenant: str, file_id: str) -> bool:
        """Remove a file; False if there was none."""
        if not _FILE_ID.match(file_id):
            return False
        directory = self._directory(tenant)

        def remove() -> bool:
            try:
                (directory / f"{file_id}.json").unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(FileNotFoundError):
                (directory / f"{file_id}.bin").unlink()
            return True

        return await asyncio.to_thread(remove)


def _read_metadata(path: Path) -> StoredFile | None:
    try:
        return StoredFile.model_validate_json(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValidationError:
        # Written atomically by us: only a hand-edited file gets here.
        return None


def new_metadata(
    upload: Upload,
    *,
    filename: str,
    mime_type: str,
    expires_in_s: int | None = None,
    session_id: str | None = None,
    output_path: str | None = None,
) -> StoredFile:
    """The metadata of ``upload``'s content, stamped now."""
    created = now()
    expires = None
    if expires_in_s is not None:
        expires = rfc3339(created + timedelta(seconds=expires_in_s))
    return StoredFile(
        id=upload.id,
        filename=filename,
        mime_type=mime_type,
        size_bytes=upload.size,
        sha256=upload.sha256,
        created_at=rfc3339(created),
        expires_at=expires,
        session_id=session_id,
        output_path=output_path,
    )
