"""What the operator's handlers share: settings and clients, made once at start-up."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis

from paddock.eventlog import EventLog, RedisSettings, SessionState
from paddock.kube import KubeClient
from paddock.operator.informer import Informer
from paddock.operator.render import RenderSettings


def _without_credentials(url: str) -> str:
    """The URL without its user and password: the harness URL goes into Deployments."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


@dataclass(frozen=True)
class OperatorSettings:
    redis: RedisSettings = field(default_factory=lambda: RedisSettings("redis://127.0.0.1:6379/0"))
    """PADDOCK_REDIS_URL, _USERNAME (paddock-operator), _PASSWORD or _PASSWORD_FILE,
    _CA_FILE: the operator's own Redis user."""
    render: RenderSettings = field(default_factory=RenderSettings)
    sandbox_image: str | None = None
    """Default sandbox image for Environments that use the built-in default."""
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    namespaces: tuple[str, ...] = ()
    """Namespaces served; empty: all."""
    sync_interval_s: float = 1.0
    """How often the status sync reads the snapshots of every session."""
    package_token_key_file: str | None = None
    """The package proxy's token key: the operator mints each installing sandbox's token."""
    thread_sandboxes: int = 20
    """PADDOCK_THREAD_SANDBOXES: the most sandboxes the threads of one session hold at once
    (besides the session's own); docs/harness.md, "Threads"."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> OperatorSettings:
        redis = RedisSettings.from_env({"PADDOCK_REDIS_URL": "redis://127.0.0.1:6379/0", **env})
        harness_url = _without_credentials(env.get("PADDOCK_HARNESS_REDIS_URL", redis.url))
        return cls(
            redis=redis,
            render=RenderSettings(
                image=env.get("PADDOCK_IMAGE", RenderSettings.image),
                redis_url=harness_url,
                redis_ca=harness_url.startswith("rediss://")
                and bool(redis.ca_file or redis.ca_pem),
                anthropic_url=env.get("PADDOCK_ANTHROPIC_URL", RenderSettings.anthropic_url),
                gateway_url=env.get("PADDOCK_GATEWAY_URL") or None,
                gateway_namespace=env.get("PADDOCK_GATEWAY_NAMESPACE") or None,
                gateway_labels=_labels(env.get("PADDOCK_GATEWAY_LABELS", "")),
                gateway_port=int(env.get("PADDOCK_GATEWAY_POD_PORT") or 8080),
                package_proxy_url=env.get("PADDOCK_PACKAGE_PROXY_URL") or None,
                package_proxy_namespace=env.get("PADDOCK_PACKAGE_PROXY_NAMESPACE") or None,
                package_proxy_labels=_labels(env.get("PADDOCK_PACKAGE_PROXY_LABELS", "")),
                pip_index_url=env.get("PADDOCK_PIP_INDEX_URL") or None,
                npm_registry=env.get("PADDOCK_NPM_REGISTRY") or None,
                proxy_address_exceptions=tuple(
                    e.strip()
                    for e in env.get("PADDOCK_PROXY_ADDRESS_EXCEPTIONS", "").split(",")
                    if e.strip()
                ),
                apt_sources=env.get("PADDOCK_APT_SOURCES") or None,
            ),
            package_token_key_file=env.get("PADDOCK_PACKAGE_PROXY_TOKEN_KEY_FILE") or None,
            sandbox_image=env.get("PADDOCK_SANDBOX_IMAGE") or None,
            identity=env.get("POD_NAME") or cls().identity,
            thread_sandboxes=int(env.get("PADDOCK_THREAD_SANDBOXES") or cls.thread_sandboxes),
            namespaces=tuple(
                n.strip() for n in env.get("PADDOCK_WATCH_NAMESPACES", "").split(",") if n.strip()
            ),
        )


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeClient
    redis: Redis
    informers: dict[str, Informer] = field(default_factory=dict)
    """In-memory copies of objects, by kind (`Pod`: sandbox pods, `Environment`, `Agent`)."""
    log: EventLog = field(init=False)
    state: SessionState = field(init=False)

    def __post_init__(self) -> None:
        self.log = EventLog(self.redis)
        self.state = SessionState(self.redis)

    async def find(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object from its informer, or from the apiserver if the informer does not
        have it (yet): a cache miss never reports an object missing that exists."""
        informer = self.informers.get(kind)
        if informer is not None and informer.transform is None:  # whole objects only
            found = informer.get(namespace, name)
            if found is not None:
                return found
        return await self.kube.find(api_version, kind, namespace, name)

    async def close(self) -> None:
        await self.kube.aclose()
        await self.redis.aclose()


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    """`k=v,k=v` as label pairs; ValueError for an item without `=`."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)
