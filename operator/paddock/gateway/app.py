"""The aiohttp application: routes, authentication, the error envelope, metrics.

Every answer carries a `request-id` header, and every error (including unknown routes,
wrong methods, bodies too large and failures of Redis or the apiserver) is the
Managed Agents envelope with a JSON content type. Bad input never yields a 5xx: a 5xx
means a dependency is down (503) or a bug (500, logged).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from paddock.eventlog import new_id
from paddock.gateway import agents, environments, events, metrics, sessions
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
from paddock.gateway.errors import ApiError, unavailable
from paddock.gateway.objects import kube_error
from paddock.gateway.openapi import document
from paddock.kube import ApiError as KubeApiError

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/healthz"})


def _credential(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def _authenticate(request: web.Request) -> None:
    key = _credential(request)
    if key is None:
        raise ApiError(401, "missing API key: send `Authorization: Bearer <key>` or `x-api-key`")
    try:
        granted = await gateway(request).keys.namespace_for(key)
    except KubeApiError as exc:
        raise unavailable("API keys cannot be read from the Kubernetes API") from exc
    if granted is None:
        raise ApiError(401, "invalid API key")
    request[NAMESPACE] = granted
    # Accepted as a set, whatever it holds (reference §1.1); nothing depends on it yet.
    betas = request.headers.get("anthropic-beta", "").split(",")
    request[BETAS] = frozenset(beta.strip() for beta in betas if beta.strip())


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def error_response(error: ApiError, request_id: str) -> web.Response:
    return web.Response(
        status=error.status,
        body=error.body(request_id).model_dump_json(),
        content_type="application/json",
        headers=error.headers,
    )


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = new_id("req_")
    request[STARTED] = time.perf_counter()
    try:
        routing_error = request.match_info.http_exception
        if routing_error is not None:
            raise routing_error
        if request.path not in PUBLIC_PATHS:
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
    for module in (agents, environments, sessions, events):
        app.add_routes(module.routes)
    app.router.add_get("/v1/openapi.json", _openapi)
    app.router.add_get("/healthz", _health)
    app.on_response_prepare.append(_on_prepare)
    app.on_shutdown.append(_end_streams)

    async def close(app: web.Application) -> None:
        await gw.close()

    app.on_cleanup.append(close)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` stops it) and the port
    (the chosen one when ``port`` is 0)."""
    # Cancel a handler when its client disconnects: an event stream then frees its Redis
    # connection at once instead of at its next write.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
