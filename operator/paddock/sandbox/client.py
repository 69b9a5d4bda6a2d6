"""`SandboxClient`: what the harness uses to talk to one sandbox.

Failures come in two kinds. `SandboxUnavailable`: the sandbox could not be reached or did
not answer in time (it may be dead; a retry of a call with the same call id is safe).
`SandboxError`: the sandbox answered with an error status (401, 404, 409, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from paddock.models import FileResource, GitRepository
from paddock.sandbox.api import (
    BindRequest,
    BindResult,
    CancelResult,
    ErrorBody,
    Stats,
    ToolCall,
    ToolResult,
)
from paddock.sandbox.mounts import MountedFile, MountedRepository, MountRepository, Outputs

__all__ = [
    "BindResult",
    "SandboxAlreadyBound",
    "SandboxClient",
    "SandboxError",
    "SandboxUnavailable",
    "SandboxUnreachable",
    "Stats",
    "ToolResult",
]

DEFAULT_TIMEOUT = 30.0
BIND_TIMEOUT = 660.0
"""Long enough for the sandbox's clone timeout plus setup."""
REACH_TIMEOUT = 10.0
"""How long `bind` keeps trying to connect to a sandbox that refuses or drops connections:
a claimed sandbox admits its Agent's harness pods only once the cluster's policy engine has
seen the claim's labels (docs/sandbox.md, "Reaching a claimed sandbox")."""
_REACH_FIRST, _REACH_FAST_FOR, _REACH_MAX, _REACH_PAUSE = 0.05, 1.0, 2.0, 0.01
"""Connect timeouts of the attempts: 50 ms during the first second (a pod-network connect
takes milliseconds; a SYN the policy engine dropped, or rejected once the kernel's ICMP rate
limit has run out, is then sent again soon instead of after TCP's own 1 s), then doubling up
to 2 s (a slow network still gets through); 10 ms between attempts."""
_CALL_MARGIN = 30.0
"""Beyond a bash call's own timeout: the SIGTERM grace, the kill, the transfer."""
FILE_TOOL_TIMEOUT = 90.0
"""The file tools stop by themselves within 60 s (grep's budget); a cancel waits for the
call it stops."""
_Model = TypeVar("_Model", bound=BaseModel)


class SandboxUnavailable(Exception):
    """The sandbox could not be reached, dropped the connection or did not answer in time."""


class SandboxUnreachable(SandboxUnavailable):
    """No connection could be made: the request never reached the sandbox."""


class SandboxError(Exception):
    """The sandbox answered with an error status."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"{status} {kind}: {message}")
        self.status = status
        self.kind = kind
        self.message = message


class SandboxAlreadyBound(SandboxError):
    """The sandbox serves another session; get a fresh one."""


class SandboxClient:
    """An HTTP client for one sandbox, authenticated with its token. Use it as an async
    context manager or call `aclose`."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ready(self) -> bool:
        """Whether the sandbox answers its readiness probe; False when unreachable."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def bind(
        self,
        session_id: str,
        proxy_url: str,
        proxy_token: str,
        *,
        repositories: Sequence[GitRepository] = (),
        files: Sequence[FileResource] = (),
        git_credential_hosts: Sequence[str] = (),
        timeout: float = BIND_TIMEOUT,  # noqa: ASYNC109 -- an HTTP timeout, not a deadline
        reach_timeout: float = REACH_TIMEOUT,
    ) -> BindResult:
        """Bind the sandbox to a session. Idempotent for the same session; raises
        SandboxAlreadyBound if another session has it, pydantic.ValidationError for invalid
        arguments. Clone failures are in the result. A connection that fails is tried again,
        at once and with short connect timeouts at first, for ``reach_timeout`` seconds:
        the first call to a freshly claimed sandbox may come before the policy engine
        admits it (then SandboxUnreachable)."""
        body = BindRequest(
            session_id=session_id,
            proxy_url=proxy_url,
            proxy_token=proxy_token,
            repositories=list(repositories),
            files=list(files),
            git_credential_hosts=list(git_credential_hosts),
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + reach_timeout
        connect = _REACH_FIRST
        while True:
            left = deadline - loop.time()
            try:
                return await self._request(
                    "POST",
                    "/v1/bind",
                    BindResult,
                    body,
                    timeout=httpx.Timeout(timeout, connect=max(min(connect, left), 0.01)),
                )
            except SandboxUnreachable:
                if loop.time() >= deadline:
                    raise
            if loop.time() - started >= _REACH_FAST_FOR:
                connect = min(connect * 2, _REACH_MAX)
            await asyncio.sleep(min(_REACH_PAUSE, max(deadline - loop.time(), 0)))

    async def call(
        self,
        name: str,
        tool_input: dict[str, Any],
        call_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- an HTTP timeout
    ) -> ToolResult:
        """Run tool `name`. With a `call_id` (the tool_use id) a retry after
        SandboxUnavailable never executes twice. `timeout` defaults to the bash timeout plus
        a margin for bash, and to FILE_TOOL_TIMEOUT otherwise."""
        if timeout is None:
            timeout = FILE_TOOL_TIMEOUT
            if name == "bash":
                timeout_ms = tool_input.get("timeout_ms")
                seconds = timeout_ms / 1000 if isinstance(timeout_ms, int) else 120.0
                timeout = seconds + _CALL_MARGIN
        body = ToolCall(input=tool_input, call_id=call_id)
        return await self._request("POST", f"/v1/tools/{name}", ToolResult, body, timeout=timeout)

    async def cancel(self, call_id: str) -> bool:
        """Stop a call (killing its process group); True if it was stopped or will not run.
        Returns once the call has ended."""
        path = f"/v1/calls/{quote(call_id, safe='')}/cancel"
        result = await self._request("POST", path, CancelResult, timeout=FILE_TOOL_TIMEOUT)
        return result.cancelled

    async def mount_file(self, key: str, path: str, content: AsyncIterator[bytes]) -> MountedFile:
        """Stream ``content`` into the file at ``path`` unless ``key`` was mounted before."""
        try:
            response = await self._http.put(
                "/v1/mounts/file",
                params={"key": key, "path": path},
                content=content,
                headers={"Content-Type": "application/octet-stream"},
                timeout=httpx.Timeout(DEFAULT_TIMEOUT, read=BIND_TIMEOUT),
            )
        except httpx.TransportError as exc:
            raise SandboxUnavailable(f"PUT /v1/mounts/file: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return MountedFile.model_validate_json(response.content)

    async def mount_repository(self, key: str, repository: GitRepository) -> MountedRepository:
        """Clone ``repository`` into the bound sandbox unless ``key`` was mounted before."""
        body = MountRepository(key=key, repository=repository)
        return await self._request(
            "POST", "/v1/mounts/repository", MountedRepository, body, timeout=BIND_TIMEOUT
        )

    async def outputs(self) -> Outputs:
        """The files in the session's outputs directory."""
        return await self._request("GET", "/v1/outputs", Outputs)

    @contextlib.asynccontextmanager
    async def output(self, path: str) -> AsyncIterator[httpx.Response]:
        """A streamed response with the content of output file ``path``."""
        try:
            async with self._http.stream(
                "GET", f"/v1/outputs/{quote(path)}", timeout=httpx.Timeout(DEFAULT_TIMEOUT)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                yield response
        except httpx.TransportError as exc:
            raise SandboxUnavailable(f"GET /v1/outputs/{path}: {exc}") from exc

    async def stats(self) -> Stats:
        """How many times each tool really executed."""
        return await self._request("GET", "/v1/stats", Stats)

    async def _request(
        self,
        method: str,
        path: str,
        answer: type[_Model],
        body: BaseModel | None = None,
        *,
        timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109 -- an HTTP timeout
    ) -> _Model:
        content = body.model_dump_json(exclude_none=True) if body is not None else None
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                headers={"Content-Type": "application/json"},
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise SandboxUnreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            raise SandboxUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise SandboxError(response.status_code, "invalid_response", str(exc)) from exc


def _error(response: httpx.Response) -> SandboxError:
    try:
        detail = ErrorBody.model_validate_json(response.content).error
        kind, message = detail.type, detail.message
    except ValidationError:
        kind, message = "api_error", response.text[:500]
    cls = SandboxAlreadyBound if response.status_code == 409 else SandboxError
    return cls(response.status_code, kind, message)
