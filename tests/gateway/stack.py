"""A gateway under test, in the test's event loop, over the real apiserver and Redis.

Two tenants (namespaces with an API key each); harness workers started per Agent against
the scripted model; and the operator's sandbox-binding role played by a loop that answers
the harness's sandbox requests with a real sandbox server. The CLI tests use it too.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
from redis.asyncio import Redis

from paddock.eventlog import (
    GATEWAY_USER,
    RedisSettings,
    SandboxBinding,
    SandboxRequest,
    SessionState,
    sandbox_requests,
)
from paddock.gateway.app import create_app, start
from paddock.gateway.auth import API_KEY_LABEL
from paddock.gateway.common import Gateway
from paddock.gateway.config import GatewayConfig
from paddock.harness import RetryPolicy
from paddock.harness.worker import Worker, WorkerSettings
from paddock.models import AgentSpec, SecretKeyReference
from paddock.testing.controlplane import ControlPlane
from paddock.testing.fakemodel import FakeModelServer, Script
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import RunningSandbox


@dataclass(frozen=True)
class Tenant:
    namespace: str
    key: str


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Stack:
    control_plane: ControlPlane
    redis_server: RedisServer
    """The gateway connects as its own user, workers as their tenant's, the test as the
    operator (``redis``)."""
    sandbox: RunningSandbox
    files_dir: Path | None = None
    """The gateway's file store; None: a temporary directory, removed at close."""
    ping_interval_s: float = 15.0
    tenants: list[Tenant] = field(default_factory=list)
    system_namespace: str = ""
    url: str = ""
    gateway: Gateway | None = None
    _runner: Any = None
    _redis: Redis | None = None
    _binder: asyncio.Task[None] | None = None
    _binder_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _workers: list[tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)
    _tenant_clients: dict[str, Redis] = field(default_factory=dict)
    _models: list[FakeModelServer] = field(default_factory=list)
    _own_files_dir: bool = False
    _clients: list[anthropic.AsyncAnthropic] = field(default_factory=list)

    @property
    def a(self) -> Tenant:
        return self.tenants[0]

    @property
    def b(self) -> Tenant:
        return self.tenants[1]

    @property
    def redis(self) -> Redis:
        assert self._redis is not None
        return self._redis

    def kube(self) -> httpx.Client:
        return self.control_plane.client()

    async def start(self) -> Stack:
        suffix = secrets.token_hex(3)
        self.system_namespace = f"gw-system-{suffix}"
        with self.kube() as kube:
            for namespace in (self.system_namespace, f"gw-a-{suffix}", f"gw-b-{suffix}"):
                response = kube.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
                assert response.status_code == 201, response.text
            for namespace in (f"gw-a-{suffix}", f"gw-b-{suffix}"):
                self.tenants.append(self.add_key(namespace, kube=kube))
        self._redis = Redis.from_url(self.redis_server.url)
        if self.files_dir is None:
            self.files_dir = Path(tempfile.mkdtemp(prefix="paddock-files-"))
            self._own_files_dir = True
        config = GatewayConfig(
            redis=RedisSettings(
                self.redis_server.plain_url,
                username=GATEWAY_USER,
                password=self.redis_server.gateway_password,
            ),
            namespace=self.system_namespace,
            default_anthropic_secret=SecretKeyReference(name="anthropic", key="api-key"),
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            kubeconfig=str(self.control_plane.kubeconfig),
            files_dir=self.files_dir,
        )
        self.gateway = Gateway.connect(config)
        self.gateway.ping_interval_s = self.ping_interval_s
        self.gateway.fanout.block_ms = 1000
        self._runner, port = await start(create_app(self.gateway), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"
        self._binder = asyncio.create_task(self._bind_sandboxes())
        return self

    def add_key(self, namespace: str, *, kube: httpx.Client | None = None) -> Tenant:
        """A new API key Secret granting ``namespace``."""
        key = f"sk-paddock-{secrets.token_urlsafe(16)}"
        secret = {
            "metadata": {
                "name": f"key-{secrets.token_hex(4)}",
                "labels": {API_KEY_LABEL: "true"},
            },
            "data": {"api-key": b64(key + "\n"), "namespace": b64(namespace)},
        }
        client = kube or self.kube()
        response = client.post(f"/api/v1/namespaces/{self.system_namespace}/secrets", json=secret)
        assert response.status_code == 201, response.text
        if kube is None:
            client.close()
        return Tenant(namespace, key)

    def client(self, tenant: Tenant | None = None, **options: Any) -> anthropic.AsyncAnthropic:
        """The official SDK, unpatched, pointed at the gateway."""
        client = anthropic.AsyncAnthropic(
            base_url=self.url, api_key=(tenant or self.a).key, **{"max_retries": 0, **options}
        )
        self._clients.append(client)
        return client

    def http(self, tenant: Tenant | None = None, *, auth: bool = True) -> httpx.AsyncClient:
        """A plain HTTP client with the tenant's key, for what the SDK would not send."""
        headers = {"x-api-key": (tenant or self.a).key} if auth else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def resource(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.kube() as kube:
            response = kube.get(
                f"/apis/paddock.dev/v1alpha1/namespaces/{namespace}/{plural}/{name}"
            )
        return response.json() if response.status_code == 200 else None

    def resources(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        with self.kube() as kube:
            response = kube.get(f"/apis/paddock.dev/v1alpha1/namespaces/{namespace}/{plural}")
        return list(response.json()["items"])

    def agent_resource(self, agent_id: str, tenant: Tenant | None = None) -> dict[str, Any]:
        namespace = (tenant or self.a).namespace
        (found,) = [
            item
            for item in self.resources("agents", namespace)
            if item["metadata"].get("labels", {}).get("paddock.dev/agent-id") == agent_id
        ]
        return found

    def start_worker(
        self, agent_id: str, script: Script, tenant: Tenant | None = None, **settings: Any
    ) -> FakeModelServer:
        """A harness worker for the Agent, calling a scripted model; returns the model.
        ``settings`` are `WorkerSettings` fields (a proxy's URLs, retry policies)."""
        tenant = tenant or self.a
        resource = self.agent_resource(agent_id, tenant)
        model = FakeModelServer(script).start()
        self._models.append(model)
        settings = WorkerSettings(
            agent=f"{tenant.namespace}/{resource['metadata']['name']}",
            spec=AgentSpec.model_validate(resource["spec"]),
            worker_id=f"worker-{len(self._workers)}",
            model_base_url=model.url,
            gateway_url=self.url,
            lease_ttl_ms=3000,
            retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.1),
            **settings,
        )
        stop = asyncio.Event()
        redis = self._tenant_clients.get(tenant.namespace)
        if redis is None:
            url = self.redis_server.tenant_url(tenant.namespace)
            redis = self._tenant_clients[tenant.namespace] = Redis.from_url(url)
        self._workers.append((stop, asyncio.create_task(Worker(settings, redis).run(stop))))
        return model

    async def _bind_sandboxes(self) -> None:
        """The operator's part: bind a sandbox to every session that asks for one."""
        redis = Redis.from_url(self.redis_server.url)
        state = SessionState(redis)
        last = {sandbox_requests(t.namespace): "0-0" for t in self.tenants}
        tenant_of = {sandbox_requests(t.namespace): t.namespace for t in self.tenants}
        try:
            # Stopped by the event, not cancelled: a cancelled blocking XREAD can leave its
            # connection (and so this task) hanging.
            while not self._binder_stop.is_set():
                reply = await redis.xread(dict(last), block=500)
                for stream, entries in reply or []:
                    for entry_id, fields in entries:
                        last[stream.decode()] = entry_id
                        session_id = SandboxRequest.from_fields(fields).session_id
                        tenant = state.tenant(tenant_of[stream.decode()])
                        binding = SandboxBinding(
                            url=self.sandbox.url,
                            token=self.sandbox.token,
                            pod=f"sandbox-{secrets.token_hex(3)}",
                        )
                        await tenant.bind_sandbox(session_id, binding)
        finally:
            await redis.aclose()

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for stop, _ in self._workers:
            stop.set()
        tasks = [task for _, task in self._workers]
        if self._binder is not None:
            self._binder_stop.set()
            tasks.append(self._binder)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for model in self._models:
            model.stop()
        if self._redis is not None:
            await self._redis.aclose()
        for client in self._tenant_clients.values():
            await client.aclose()
        if self._own_files_dir and self.files_dir is not None:
            shutil.rmtree(self.files_dir, ignore_errors=True)


async def turn(
    client: anthropic.AsyncAnthropic, session_id: str, text: str, **stream_options: Any
) -> list[Any]:
    """Send ``text`` as a `user.message`; the events streamed (with ``stream_options``, such
    as `event_deltas`) up to the session's next idle."""
    seen: list[Any] = []
    async with await client.beta.sessions.events.stream(session_id, **stream_options) as stream:
        await client.beta.sessions.events.send(
            session_id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
        )
        async for event in stream:
            seen.append(event)
            if event.type == "session.status_idle":
                return seen
    raise AssertionError(f"stream ended after {[e.type for e in seen]}")
