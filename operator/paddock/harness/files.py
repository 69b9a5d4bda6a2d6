"""Files between the gateway's file store and a session's sandbox.

Before each tool call the harness mounts the session's Files API files that this sandbox
does not have yet (the settings are read again, so a file added while the session runs is
there for the next call), streaming each from the gateway into the sandbox; the warm path
stays warm, nothing is baked into the pod. After each turn it copies the files the agent
left in the outputs directory to the gateway, where they are files scoped to the session.
Both go to the gateway's internal routes with the session's `gateway_token`
(docs/gateway.md, "Files").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from paddock.eventlog import SessionSettings
from paddock.sandbox import SandboxClient, SandboxError, SandboxUnavailable

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


@dataclass
class SandboxFiles:
    """What one run of a session put into and took out of one sandbox."""

    mounted: set[str] = field(default_factory=set)
    """Mount keys done (or refused for good) in this sandbox."""
    uploaded: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Output path -> (size, mtime_ns) as last uploaded."""


class GatewayFiles:
    """The gateway's internal file routes for one session."""

    def __init__(
        self, http: httpx.AsyncClient, gateway_url: str, session_id: str, settings: SessionSettings
    ) -> None:
        self.http = http
        self.base = f"{gateway_url.rstrip('/')}/internal/v1/sessions/{session_id}"
        self.headers = {
            "Authorization": f"Bearer {settings.gateway_token}",
            "x-paddock-namespace": settings.namespace,
        }

    async def mount(
        self, settings: SessionSettings, sandbox: SandboxClient, done: SandboxFiles
    ) -> None:
        """Mount every file of ``settings`` not in ``done`` yet. A file that cannot be had
        is logged and left out (the call goes on: the agent finds the file missing); one
        that failed for a passing reason is tried again before the next call."""
        for file in settings.files:
            if file.file_id is None:
                continue  # inline content: written at bind
            key = f"{file.file_id}:{file.path}"
            if key in done.mounted:
                continue
            url = f"{self.base}/files/{file.file_id}"
            try:
                async with self.http.stream("GET", url, headers=self.headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        log.warning(
                            "file %s cannot be mounted: the gateway answered %d: %s",
                            file.file_id,
                            response.status_code,
                            response.text[:200],
                        )
                        if response.status_code < 500:
                            done.mounted.add(key)  # deleted or refused: asking again won't help
                        continue
                    result = await sandbox.mount_file(key, file.path, response.aiter_bytes(_CHUNK))
            except httpx.HTTPError as exc:
                log.warning("file %s cannot be mounted now: %s", file.file_id, exc)
                continue
            if not result.ok:
                log.warning(
                    "file %s cannot be written to %s: %s", file.file_id, file.path, result.error
                )
            done.mounted.add(key)

    async def upload_outputs(self, sandbox: SandboxClient, done: SandboxFiles) -> None:
        """Copy the output files that changed since the last upload to the gateway."""
        try:
            outputs = await sandbox.outputs()
        except (SandboxError, SandboxUnavailable) as exc:
            log.warning("the outputs cannot be listed: %s", exc)
            return
        if outputs.truncated:
            log.warning("more than %d output files: only the first are kept", len(outputs.files))
        for output in outputs.files:
            stamp = (output.size, output.mtime_ns)
            if done.uploaded.get(output.path) == stamp:
                continue
            try:
                async with sandbox.output(output.path) as content:
                    response = await self.http.put(
                        f"{self.base}/outputs/{quote(output.path)}",
                        content=content.aiter_bytes(_CHUNK),
                        headers={**self.headers, "Content-Type": "application/octet-stream"},
                    )
            except (httpx.HTTPError, SandboxError, SandboxUnavailable) as exc:
                log.warning("output %s cannot be uploaded now: %s", output.path, exc)
                continue
            if response.status_code >= 400:
                log.warning(
                    "output %s was refused: %d %s",
                    output.path,
                    response.status_code,
                    response.text[:200],
                )
            done.uploaded[output.path] = stamp
