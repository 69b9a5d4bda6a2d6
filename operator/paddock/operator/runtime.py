"""What the operator's handlers share: settings and clients, made once at start-up."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from paddock.eventlog import EventLog, SessionState
from paddock.kube import KubeClient
from paddock.operator.informer import Informer
from paddock.operator.render import RenderSettings


@dataclass(frozen=True)
class OperatorSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    render: RenderSettings = field(default_factory=RenderSettings)
    sandbox_image: str | None = None
    """Default sandbox image for Environments that use the built-in default."""
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    namespaces: tuple[str, ...] = ()
    """Namespaces served; empty: all."""
    sync_interval_s: float = 1.0
    """How often the status sync reads the snapshots of every session."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> OperatorSettings:
        redis_url = env.get("PADDOCK_REDIS_URL", cls.redis_url)
        return cls(
            redis_url=redis_url,
            render=RenderSettings(
                image=env.get("PADDOCK_IMAGE", RenderSettings.image),
                redis_url=env.get("PADDOCK_HARNESS_REDIS_URL", redis_url),
                anthropic_url=env.get("PADDOCK_ANTHROPIC_URL", RenderSettings.anthropic_url),
            ),
            sandbox_image=env.get("PADDOCK_SANDBOX_IMAGE") or None,
            identity=env.get("POD_NAME") or cls().identity,
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
