"""Mounting after the bind (streamed files, each key once) and the outputs directory,
against real sandbox servers; repositories mounted later are in test_bind.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from paddock.sandbox import SandboxError
from paddock.testing.sandbox import RunningSandbox


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_file_is_streamed_in_once_per_key(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    target = server.workdir / "uploads" / "data.bin"
    payload = bytes(range(256)) * 4096  # 1 MiB, not text
    async with server.client() as client:
        mounted = await client.mount_file(
            "file_1:data", str(target), _chunks(payload[:1000], payload[1000:])
        )
        assert (mounted.path, mounted.ok, mounted.skipped) == (str(target), True, False)
        assert target.read_bytes() == payload
        # The agent changes it; a resumed worker mounting the same key again changes nothing.
        target.write_bytes(b"edited")
        again = await client.mount_file("file_1:data", str(target), _chunks(b"original"))
        assert again.skipped
        assert target.read_bytes() == b"edited"
        assert not [p for p in target.parent.iterdir() if p.name.endswith(".part")]

        # A path that cannot be written is reported, not an HTTP error; the key stays free.
        blocked = server.workdir / "file-not-dir"
        blocked.write_text("x")
        failed = await client.mount_file("file_2:x", str(blocked / "y"), _chunks(b"y"))
        assert not failed.ok
        assert failed.error
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.put(
                "/v1/mounts/file",
                params={"key": "k", "path": "relative"},
                headers={"Authorization": f"Bearer {server.token}"},
                content=b"x",
            )
        assert answer.status_code == 400


async def test_outputs_are_listed_and_served_from_their_directory_only(
    start_sandbox: Callable[..., RunningSandbox],
) -> None:
    server = start_sandbox()
    (server.outputs / "charts").mkdir(parents=True)
    (server.outputs / "report.md").write_text("# Report\n")
    (server.outputs / "charts" / "a.png").write_bytes(b"\x89PNG")
    (server.workdir / "secret").write_text("not an output")
    os.symlink(server.workdir / "secret", server.outputs / "link")
    async with server.client() as client:
        outputs = await client.outputs()
        assert outputs.directory == str(server.outputs)
        assert [(f.path, f.size) for f in outputs.files] == [("report.md", 9), ("charts/a.png", 4)]
        assert not outputs.truncated
        async with client.output("charts/a.png") as response:
            assert await response.aread() == b"\x89PNG"
        for outside in ("../workspace/secret", "link", "charts"):
            with pytest.raises(SandboxError) as missing:
                async with client.output(outside):
                    pass
            assert missing.value.status == 404
