"""The aiohttp application: routes, authentication, the error envelope, metrics.

Every answer carries a `request-id` header, and every error (including unknown routes,
wrong methods, bodies too large and failures of Redis or the apiserver) is the
Managed Agents envelope with a JSON content type. Bad input never yields a 5xx: a 5xx
means a dependency is down (503) or a bug (500, logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from redis.exceptions import RedisError

from paddock.eventlog import new_id
from paddock.gateway import (
    agents,
    console,
    environments,
    events,
    files,
    metrics,
    sessionresources,
    sessions,
    threads,
    vaults,
)
from paddock.gateway.auth import GROUP, KubernetesAuth, User, required_access, valid_namespace
from paddock.gateway.common import (
    BETAS,
    EVENT_BODY_LIMIT,
    GATEWAY,
    NAMESPACE,
    REQUEST_ID,
    STARTED,
    Gateway,
    gateway,
)
from paddock.gateway.errors import ApiError, invalid, unavailable
from paddock.gateway.objects import kube_error
from paddock.gateway.openapi import document
from paddock.kube import ApiError as KubeApiError

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/healthz"})


NAMESPACE_HEADER = "x-paddock-namespace"
"""The namespace a request is for: required of Kubernetes identities (unless the gateway has a
default), optional for API keys (which grant one namespace)."""


@dataclass(frozen=True)
class _Credential:
    value: str
    bearer: bool
    """Sent as `Authorization: Bearer`: a Paddock API key or a Kubernetes token."""


def _credential(request: web.Request) -> _Credential | None:
    # Bearer first, as before Kubernetes identities: the SDK sends its `api_key` and its
    # `auth_token` as `Authorization: Bearer`.
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        credential = _Credential(token.strip(), bearer=True)
    elif key := request.headers.get("x-api-key", "").strip():
        credential = _Credential(key, bearer=False)
    else:
        return None
    # Keys and tokens are printable ASCII; anything else is no credential of ours (and
    # would not even encode for hashing: aiohttp keeps undecodable bytes as surrogates).
    if not (credential.value.isascii() and credential.value.isprintable()):
        raise ApiError(401, "malformed credentials: keys and tokens are printable ASCII")
    return credential


def rate_limited(wait_s: float, gw: Gateway) -> ApiError:
    limiter = gw.limiter
    return ApiError(
        429,
        f"rate limit exceeded: at most {limiter.rate:g} requests a second per credential "
        f"(bursts of {limiter.burst}); retry in {wait_s:.2f} s",
        headers={
            "retry-after": str(max(1, math.ceil(wait_s))),
            "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
        },
    )


async def _authenticate(request: web.Request) -> None:
    credential = _credential(request)
    if credential is None:
        raise ApiError(
            401,
            "missing credentials: send `x-api-key: <Paddock API key>` or "
            "`Authorization: Bearer <Paddock API key or Kubernetes token>`",
        )
    gw = gateway(request)
    # Before any apiserver or Redis work: a caller over its limit costs nothing but this.
    wait = gw.limiter.take(hashlib.sha256(credential.value.encode()).digest())
    if wait is not None:
        raise rate_limited(wait, gw)
    asked = request.headers.get(NAMESPACE_HEADER, "").strip() or None
    if asked is not None and not valid_namespace(asked):
        raise invalid(f"{NAMESPACE_HEADER} is not a namespace name: {asked[:80]!r}")
    kubernetes = gw.kubernetes if credential.bearer else None
    # A bearer value is a Paddock key if it is one (no re-list on a miss: it may well be a
    # Kubernetes token), else a Kubernetes token.
    granted = await _api_key_namespace(gw, credential.value, refresh=kubernetes is None)
    if granted is None and kubernetes is not None:
        try:
            user = await kubernetes.user(credential.value)
        except KubeApiError as exc:
            log.warning("TokenReview failed: %s", exc)
            raise unavailable(
                "Kubernetes tokens cannot be checked: the Kubernetes API failed"
            ) from exc
        if user is not None:
            request[NAMESPACE] = await _kubernetes_namespace(request, kubernetes, user, asked)
            _read_betas(request)
            return
        # Not a token the apiserver knows: perhaps a key created a moment ago.
        granted = await _api_key_namespace(gw, credential.value, refresh=True)
    if granted is None:
        raise ApiError(
            401, "invalid API key or Kubernetes token" if kubernetes else "invalid API key"
        )
    if asked is not None and asked != granted:
        raise ApiError(403, f"this API key grants namespace {granted!r}, not {asked!r}")
    request[NAMESPACE] = granted
    _read_betas(request)


async def _api_key_namespace(gw: Gateway, key: str, *, refresh: bool) -> str | None:
    try:
        return await gw.keys.namespace_for(key, refresh_on_miss=refresh)
    except KubeApiError as exc:
        raise unavailable("API keys cannot be read from the Kubernetes API") from exc


async def _kubernetes_namespace(
    request: web.Request, kubernetes: KubernetesAuth, user: User, asked: str | None
) -> str:
    """The namespace ``user`` asked for, if RBAC lets them do there what the request does."""
    namespace = asked or gateway(request).config.default_namespace
    if namespace is None:
        raise invalid(f"a Kubernetes identity must name its namespace: send {NAMESPACE_HEADER}")
    access = required_access(request.method, _route(request))
    if access is None:
        raise ApiError(403, f"{request.method} {request.path} is not open to Kubernetes identities")
    try:
        allowed = await kubernetes.allowed(user, namespace, access)
    except KubeApiError as exc:
        log.warning("SubjectAccessReview failed: %s", exc)
        raise unavailable("permissions cannot be checked: the Kubernetes API failed") from exc
    if not allowed:
        raise ApiError(
            403,
            f"{user.username!r} may not {access.verb} {access.resource}.{GROUP} "
            f"in namespace {namespace!r}",
        )
    return namespace


def _read_betas(request: web.Request) -> None:
    # Accepted as a set, whatever it holds (reference §1.1); nothing depends on it yet.
    betas = request.headers.get("anthropic-beta", "").split(",")
    request[BETAS] = frozenset(beta.strip() for beta in betas if beta.strip())


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def error_response(error: ApiError, request_id: str) -> web.Response:
    response = web.Response(
        status=error.status,
        body=error.body(request_id).model_dump_json(),
        content_type="application/json",
        headers=error.headers,
    )
    if error.close:
        response.force_close()
    return response


def _outside_app_response(error: ApiError) -> web.Response:
    """``error_response`` for an answer the middleware never sees (so ``_on_prepare`` does
    not run): a request id of its own, in the header too."""
    request_id = new_id("req_")
    response = error_response(error, request_id)
    response.headers["request-id"] = request_id
    return response


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = new_id("req_")
    request[STARTED] = time.perf_counter()
    try:
        routing_error = request.match_info.http_exception
        if routing_error is not None:
            raise routing_error
        # The harness's routes check a session's token themselves (gateway/files.py).
        # The console's files hold no data: the page asks for the key (gateway/console.py).
        if (
            request.path not in PUBLIC_PATHS
            and not request.path.startswith(files.INTERNAL_PREFIX)
            and not _console_file(request.path)
        ):
            await _authenticate(request)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc, request[REQUEST_ID])
    except web.HTTPException as exc:
        message = {404: f"no route {request.method} {request.path}"}.get(exc.status, exc.reason)
        return error_response(ApiError(exc.status, message), request[REQUEST_ID])
    except KubeApiError as exc:
        return error_response(kube_error(exc), request[REQUEST_ID])
    except RedisError:
        log.warning("%s %s: Redis failed", request.method, request.path, exc_info=True)
        return error_response(unavailable("the event log is unavailable"), request[REQUEST_ID])
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(ApiError(500, "internal error"), request[REQUEST_ID])


def _console_file(path: str) -> bool:
    return path == "/console" or path.startswith(console.PREFIX)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID) or new_id("req_")
    response.headers["request-id"] = request_id
    route, method = _route(request), request.method
    metrics.REQUESTS.labels(route, method, str(response.status)).inc()
    if STARTED in request:
        metrics.LATENCY.labels(route, method).observe(time.perf_counter() - request[STARTED])


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _end_streams(app: web.Application) -> None:
    # Open event streams would hold the shutdown for its whole timeout.
    for task in list(app[GATEWAY].streams):
        task.cancel()


def create_app(gw: Gateway) -> web.Application:
    """The gateway's application; ``gw`` is closed with it."""
    app = web.Application(middlewares=[api_middleware], client_max_size=EVENT_BODY_LIMIT)
    app[GATEWAY] = gw
    for module in (
        agents,
        environments,
        sessions,
        events,
        threads,
        files,
        sessionresources,
        vaults,
        console,
    ):
        app.add_routes(module.routes)
    app.router.add_get("/v1/openapi.json", _openapi)
    app.router.add_get("/healthz", _health)
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_end_streams)

    async def close(app: web.Application) -> None:
        await gw.close()

    app.on_cleanup.append(close)
    return app


def _parse_error_message(exc: BaseException | None) -> str:
    """The parser's complaint without the bytes it quotes (they may be a credential)."""
    message = getattr(exc, "message", "") or "the request cannot be parsed"
    first = str(message).strip().splitlines()[0]
    for quote in (": b'", ': b"', ": bytearray("):
        first = first.partition(quote)[0]
    return first.rstrip(": ") or "the request cannot be parsed"


class _EnvelopeRequestHandler(RequestHandler):
    """Answers what aiohttp answers before any middleware runs in the envelope too: requests
    its parser refuses (a request line or header over 8 KiB, more than 128 headers, both
    `Content-Length` and `Transfer-Encoding`, an unknown method, broken framing), which
    aiohttp would answer in plain text (there is no hook for them: aiohttp issue #3287)."""

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # After answering a body that cannot be read (400), aiohttp reads the rest of it and
        # fails again: the client's error, answered already, not ours to log as one.
        if isinstance(kwargs.get("exc_info"), RequestPayloadError):
            log.debug("dropped the rest of an unreadable body: %s", kwargs["exc_info"])
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun: no error answer can follow")
        if isinstance(exc, HttpProcessingError):
            too_large = isinstance(exc, LineTooLong) or "Too many headers" in str(exc.message)
            text = _parse_error_message(exc)
            if too_large:
                text = (
                    f"request line or headers too large ({text}): at most {self.max_line_size} "
                    f"bytes a line, {self.max_field_size} a header, {self.max_headers} headers"
                )
            error = ApiError(431 if too_large else 400, text)
            log.debug("refused an unparsable request from %s: %s", request.remote, exc)
        else:  # 500 (a bug) or 504, outside the middleware
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            error = ApiError(status, "internal error" if status == 500 else "request failed")
        response = _outside_app_response(error)
        response.force_close()
        metrics.REQUESTS.labels("unparsed", "", str(error.status)).inc()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application
        application = made.request_handler

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            try:
                return await application(request)
            except web.HTTPException as exc:
                # Raised by aiohttp before the middleware runs (an `Expect` other than
                # 100-continue): the envelope, like everything else.
                return _outside_app_response(ApiError(exc.status, exc.text or exc.reason))

        return _EnvelopeServer(
            handle,
            request_factory=made.request_factory,
            loop=asyncio.get_running_loop(),
            **self._kwargs,
        )


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` stops it) and the port
    (the chosen one when ``port`` is 0)."""
    # Cancel a handler when its client disconnects: an event stream then frees its Redis
    # connection at once instead of at its next write.
    runner = _Runner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
