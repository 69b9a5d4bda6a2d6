"""What every handler uses: the gateway's services, the caller's namespace, request bodies."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from paddock.eventlog import EventLog, SessionState, connect
from paddock.gateway.auth import ApiKeys, KubernetesAuth
from paddock.gateway.config import GatewayConfig
from paddock.gateway.errors import ApiError, from_validation, invalid
from paddock.gateway.fanout import Fanout
from paddock.gateway.objects import Objects
from paddock.gateway.ratelimit import RateLimiter
from paddock.kube import KubeClient

P = TypeVar("P", bound=BaseModel)

OBJECT_BODY_LIMIT = 1024 * 1024
"""Bodies that become Kubernetes objects: etcd refuses objects over 1.5 MiB anyway."""
EVENT_BODY_LIMIT = 32 * 1024 * 1024
"""Event bodies go to Redis and may carry images and documents."""
_MAX_DEPTH = 64


@dataclass
class Gateway:
    """The services behind the API."""

    config: GatewayConfig
    kube: KubeClient
    keys: ApiKeys
    redis: Redis
    log: EventLog
    state: SessionState
    kubernetes: KubernetesAuth | None = None
    """Kubernetes identities; None when only API keys are accepted."""
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    """Requests per credential (disabled unless `connect` sets it from the config)."""
    ping_interval_s: float = 15.0
    """Keep-alive comments on event streams."""
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    """Tasks serving event streams, ended when the server shuts down."""
    fanout: Fanout = field(init=False)

    def __post_init__(self) -> None:
        self.fanout = Fanout(self.log)

    @classmethod
    def connect(cls, config: GatewayConfig) -> Gateway:
        # A user waits on each call: short timeouts (a hung apiserver is a 503 in seconds).
        kube = KubeClient.from_environment(
            config.kubeconfig, connections=64, connect_timeout_s=5, read_timeout_s=15
        )
        redis = connect(config.redis)
        return cls(
            config=config,
            kube=kube,
            keys=ApiKeys(kube, config.namespace),
            redis=redis,
            log=EventLog(redis),
            state=SessionState(redis),
            kubernetes=(
                KubernetesAuth(kube, audiences=config.token_audiences)
                if config.kubernetes_auth
                else None
            ),
            limiter=RateLimiter(config.rate_limit, config.rate_burst),
        )

    async def close(self) -> None:
        await self.fanout.close()
        await self.kube.aclose()
        await self.redis.aclose()


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)
"""`time.perf_counter()` when the request arrived."""
NAMESPACE = web.RequestKey("namespace", str)
"""The namespace of the request: the one the caller's API key grants, or the one a
Kubernetes identity named and may use (set by the auth middleware)."""
BETAS = web.RequestKey("betas", frozenset)
"""The `anthropic-beta` header as a set."""


def gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def namespace(request: web.Request) -> str:
    return request[NAMESPACE]


def tenant_log(request: web.Request) -> EventLog:
    """The event log of the caller's namespace (the only one its API key reaches)."""
    return gateway(request).log.tenant(namespace(request))


def objects(request: web.Request) -> Objects:
    return Objects(gateway(request).kube, namespace(request))


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


async def read_body(request: web.Request, model: type[P], *, limit: int = OBJECT_BODY_LIMIT) -> P:
    """The JSON body validated as ``model``; 400 (or 413) with the reason otherwise."""
    try:
        raw = await request.read()
    except RequestPayloadError as exc:  # e.g. `Content-Encoding: gzip` on a body that is not
        # Closing: the rest of the body is as unreadable, and aiohttp would log its reading.
        raise ApiError(400, f"request body cannot be read: {exc}", close=True) from None
    if len(raw) > limit:
        raise ApiError(413, f"request body exceeds {limit} bytes")
    try:
        # UTF-8 only (RFC 8259 §8.1): json.loads would also guess UTF-16 and UTF-32 from bytes.
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise invalid("request body is not valid JSON in UTF-8") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    if _too_deep(data):
        raise invalid(f"request body nests deeper than {_MAX_DEPTH} levels")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def checked(model: type[P], data: dict[str, Any]) -> P:
    """``data`` validated as ``model`` (a resource spec); 400 naming what is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None
