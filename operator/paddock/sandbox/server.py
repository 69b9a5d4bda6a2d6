"""The sandbox's HTTP API (aiohttp). See docs/sandbox.md for the contract.

Every route but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`. Every error
is JSON in the Anthropic error envelope; tool failures are not errors but tool results.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError

from paddock.sandbox.api import BindRequest, CancelResult, ErrorBody, ErrorDetail, ToolCall
from paddock.sandbox.base import resolve
from paddock.sandbox.binding import AlreadyBound, BindFailed, Binding
from paddock.sandbox.calls import Calls
from paddock.sandbox.mounts import MountRepository, Mounts
from paddock.sandbox.packages import PackagePlan
from paddock.sandbox.shell import CommandEnvironment, Shell
from paddock.sandbox.tools import Toolbox

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
_CHUNK = 256 * 1024
MAX_REQUEST_BYTES = 32 * 1024 * 1024
"""Room for `write` calls with large content and binds with many files."""


DEFAULT_OUTPUTS_DIR = Path("/mnt/session/outputs")


@dataclass(frozen=True)
class Settings:
    workdir: Path
    token: str
    clone_timeout: float = 300.0
    outputs_dir: Path = DEFAULT_OUTPUTS_DIR
    """Where the agent leaves files for the user (reference: `/mnt/session/outputs/`)."""
    packages: PackagePlan | None = None
    """The Environment's packages, installed before the server started: commands find them."""


class ApiError(Exception):
    """An HTTP error answered as an error envelope."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Model = TypeVar("_Model", bound=BaseModel)


def create_app(settings: Settings) -> web.Application:
    """The sandbox application. Shutting it down cancels running calls and kills every
    process group the sandbox started."""
    scratch = Path(tempfile.mkdtemp(prefix="paddock-sandbox-"))
    env = CommandEnvironment(settings.packages)
    shell = Shell(settings.workdir, env, scratch)
    api = _Api(
        settings,
        Toolbox(settings.workdir, shell),
        Binding(settings.workdir, env, settings.clone_timeout),
        Mounts(settings.outputs_dir),
    )
    try:
        # There before the first call, as the agent is told (a pod mounts an emptyDir above).
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create the outputs directory %s: %s", settings.outputs_dir, exc)

    async def shutdown(_app: web.Application) -> None:
        await api.calls.cancel_all()
        await shell.close()
        shutil.rmtree(scratch, ignore_errors=True)

    app = web.Application(
        middlewares=[_errors, _authenticate(settings.token)], client_max_size=MAX_REQUEST_BYTES
    )
    app.on_shutdown.append(shutdown)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_post("/v1/bind", api.bind)
    app.router.add_post("/v1/tools/{name}", api.tool)
    app.router.add_post("/v1/calls/{call_id}/cancel", api.cancel)
    app.router.add_get("/v1/stats", api.stats)
    app.router.add_put("/v1/mounts/file", api.mount_file)
    app.router.add_post("/v1/mounts/repository", api.mount_repository)
    app.router.add_get("/v1/outputs", api.outputs)
    app.router.add_get("/v1/outputs/{path:.+}", api.output)
    return app


class _Api:
    def __init__(
        self, settings: Settings, toolbox: Toolbox, binding: Binding, mounts: Mounts
    ) -> None:
        self.settings = settings
        self.toolbox = toolbox
        self.binding = binding
        self.mounts = mounts
        self.calls = Calls(toolbox.run)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.settings.workdir.is_dir():
            reason = f"workdir {self.settings.workdir} does not exist"
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    async def bind(self, request: web.Request) -> web.Response:
        body = await _parse(request, BindRequest)
        try:
            result = await self.binding.bind(body)
        except AlreadyBound as exc:
            raise ApiError(409, "conflict_error", str(exc)) from None
        except BindFailed as exc:
            raise ApiError(500, "api_error", str(exc)) from None
        log.info("bound to session %s", result.session_id)
        return _json(result)

    async def tool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.toolbox.names:
            known = ", ".join(sorted(self.toolbox.names))
            raise ApiError(
                404, "not_found_error", f"unknown tool {name!r}; this sandbox has {known}"
            )
        body = await _parse(request, ToolCall)
        return _json(await self.calls.call(name, body.input, body.call_id))

    async def cancel(self, request: web.Request) -> web.Response:
        cancelled = await self.calls.cancel(request.match_info["call_id"])
        return _json(CancelResult(cancelled=cancelled))

    async def stats(self, request: web.Request) -> web.Response:
        return _json(self.calls.stats())

    async def mount_file(self, request: web.Request) -> web.Response:
        """The body is the file's content, streamed: files may be far larger than any JSON
        body this server takes."""
        key, path = request.query.get("key", ""), request.query.get("path", "")
        if not key or not path.startswith("/"):
            raise ApiError(400, "invalid_request_error", "key and an absolute path are required")
        target = resolve(self.settings.workdir, path)
        result = await self.mounts.mount_file(key, target, request.content.iter_chunked(_CHUNK))
        return _json(result)

    async def mount_repository(self, request: web.Request) -> web.Response:
        """Clone a repository added to the running session: through the proxy, so only into
        a bound sandbox (409 before)."""
        body = await _parse(request, MountRepository)
        if self.binding.session_id is None:
            raise ApiError(409, "conflict_error", "bind the sandbox before cloning into it")
        return _json(
            await self.mounts.mount_repository(body.key, body.repository, self.binding.clone)
        )

    async def outputs(self, request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(self.mounts.outputs))

    async def output(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        path = await asyncio.to_thread(self.mounts.output_path, relative)
        if path is None:
            raise ApiError(404, "not_found_error", f"no output file {relative!r}")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def _parse(request: web.Request, model: type[_Model]) -> _Model:
    try:
        return model.model_validate(await request.json())
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_request_error", f"the body is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(400, "invalid_request_error", problems) from None


def _json(model: BaseModel) -> web.Response:
    return web.json_response(text=model.model_dump_json(exclude_none=True))


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = ErrorBody(error=ErrorDetail(type=kind, message=message))
    return web.json_response(text=body.model_dump_json(), status=status, headers=headers)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as an error envelope; never let an exception escape as HTML."""
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.kind, exc.message, headers)
    except web.HTTPException as exc:
        kind = {404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large"}
        return _error(exc.status, kind.get(exc.status, "api_error"), exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "api_error", "internal error in the sandbox (logged)")


def _authenticate(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check the bearer token in constant time, except on the probes."""
        if request.path not in PUBLIC_PATHS:
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not presented:
                raise ApiError(401, "authentication_error", "missing bearer token")
            if not hmac.compare_digest(presented.strip().encode(), expected):
                raise ApiError(401, "authentication_error", "invalid bearer token")
        return await handler(request)

    return authenticate
