"""Mounted files that change under a running proxy: Secrets and the ConfigMap.

Kubernetes updates both by writing a new directory and swapping a symlink, so the path keeps
its name but points at a new inode. A file is re-read whenever its device, inode, size or
mtime differ from the last read (`os.stat` follows the symlink, so the swap is seen at once),
and on every read while its mtime is under two seconds old.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

RACY_SECONDS = 2.0


class SecretUnavailable(Exception):
    """A secret file is missing, unreadable or empty. The message names the path, never the
    content."""


class WatchedFile:
    """The current content of one file, re-read only when it may have changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._content: bytes | None = None

    def read(self) -> bytes:
        """The file's content now. Raises OSError if it cannot be read."""
        stat = os.stat(self.path)
        stamp = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        # A file written within the filesystem's timestamp granularity can change again
        # without a new stamp ("racily clean", as git says): trust the stamp only once the
        # mtime is safely in the past.
        racy = time.time() - stat.st_mtime < RACY_SECONDS
        if self._content is None or stamp != self._stamp or racy:
            with open(self.path, "rb") as file:
                # Stamp what was actually opened, so a swap between stat and open is re-read.
                opened = os.fstat(file.fileno())
                self._content = file.read()
            self._stamp = (opened.st_dev, opened.st_ino, opened.st_size, opened.st_mtime_ns)
        return self._content

    def poll(self) -> bytes | None:
        """The content if it differs from what the last `read` or `poll` returned, else None.
        Raises OSError if the file cannot be read."""
        before = self._content
        content = self.read()
        return None if content == before else content

    def secret(self) -> bytes:
        """The content without surrounding whitespace (Secrets often end in a newline).

        Raises `SecretUnavailable` if the file cannot be read or is empty.
        """
        try:
            value = self.read().strip()
        except OSError as exc:
            raise SecretUnavailable(f"{self.path}: {exc.strerror}") from None
        if not value:
            raise SecretUnavailable(f"{self.path}: empty")
        return value


def header_token(value: bytes) -> str | None:
    """``value`` as a header value: visible ASCII only, else None (a newline inside would let
    a file, or a token endpoint's answer, add headers of its own)."""
    if not value or not all(0x21 <= byte <= 0x7E for byte in value):
        return None
    return value.decode("ascii")


class SecretFiles:
    """One `WatchedFile` per path, kept across config reloads so nothing is re-read needlessly."""

    def __init__(self) -> None:
        self._files: dict[Path, WatchedFile] = {}

    def get(self, path: Path) -> bytes:
        """The secret at ``path`` (see `WatchedFile.secret`)."""
        file = self._files.get(path)
        if file is None:
            file = self._files[path] = WatchedFile(path)
        return file.secret()

    def header_value(self, path: Path) -> str:
        """The secret at ``path`` as a header value (see `header_token`). Raises
        `SecretUnavailable`."""
        token = header_token(self.get(path))
        if token is None:
            raise SecretUnavailable(f"{path}: not a single token of visible ASCII")
        return token
