"""`python -m paddock.harness`: a harness worker for one Agent.

Configuration comes from the environment the operator renders into the harness container:

    PADDOCK_AGENT            <namespace>/<name> of the Agent
    PADDOCK_AGENT_FILE       the Agent resource (YAML or JSON), mounted from a ConfigMap
    PADDOCK_REDIS_URL        the event log (redis:// or rediss://)
    PADDOCK_REDIS_USERNAME   its ACL user (paddock-harness-<namespace>)
    PADDOCK_REDIS_PASSWORD   its password (from the tenant's paddock-redis-harness Secret)
    PADDOCK_REDIS_CA_PEM     the CA of a rediss:// server (from the same Secret)
    PADDOCK_WORKER_ID        this worker's name (the pod name)
    PADDOCK_MODEL_URL        the credential proxy's API listener (default http://127.0.0.1:8081)
    PADDOCK_PROXY_ADMIN_URL  the proxy's admin listener, which mints sandbox egress tokens
    PADDOCK_PROXY_EGRESS_URL the proxy address sandboxes use (the Agent's proxy Service)
    PADDOCK_GATEWAY_URL      the gateway, for Files API files and session outputs
    PADDOCK_METRICS_PORT     Prometheus metrics (default 9090; 0 disables); with several
                             processes, process n serves on the port plus n
    PADDOCK_LEASE_TTL_MS     session lease (default 15000)
    PADDOCK_WORKER_PROCESSES worker processes forked from this one (default 1); with more
                             than one, each is named <PADDOCK_WORKER_ID>-<its pid>

The process imports everything, then forks the worker processes and replaces any that dies
with a new fork, which imports nothing again (an import takes seconds of CPU)
(`paddock.harness.prefork`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path

import yaml
from prometheus_client import start_http_server

from paddock.eventlog import BeatThread, EventLog, RedisSettings, WorkQueue, connect, tenant_of
from paddock.harness import Worker, WorkerSettings
from paddock.harness.prefork import run_forked
from paddock.models import Agent


def settings_from_env(env: dict[str, str]) -> WorkerSettings:
    agent = Agent.model_validate(yaml.safe_load(Path(env["PADDOCK_AGENT_FILE"]).read_text()))
    return WorkerSettings(
        agent=env["PADDOCK_AGENT"],
        spec=agent.spec,
        worker_id=env.get("PADDOCK_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}",
        model_base_url=env.get("PADDOCK_MODEL_URL", "http://127.0.0.1:8081"),
        proxy_admin_url=env.get("PADDOCK_PROXY_ADMIN_URL") or None,
        proxy_egress_url=env.get("PADDOCK_PROXY_EGRESS_URL") or None,
        gateway_url=env.get("PADDOCK_GATEWAY_URL") or None,
        lease_ttl_ms=int(env.get("PADDOCK_LEASE_TTL_MS", "15000")),
    )


async def serve(settings: WorkerSettings, redis_settings: RedisSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    redis = connect(redis_settings)
    beats = BeatThread(lambda: connect(redis_settings))
    try:
        await Worker(settings, redis, beats=beats).run(stop)
    finally:
        await beats.close()
        await redis.aclose()


HAND_BACK_TIMEOUT_S = 5.0
"""Longer than handing back a dead worker's sessions takes; past it they wait out the TTL."""


async def hand_back_dead(
    settings: WorkerSettings, redis_settings: RedisSettings, worker_id: str
) -> None:
    """Hand back the sessions of worker ``worker_id``, whose process was reaped: they are
    resumed at once instead of after the lease TTL (a worker crash under load is often
    followed by more, and each TTL waited adds up for the sessions it held)."""
    redis = connect(redis_settings)
    try:
        queue = WorkQueue(
            EventLog(redis, tenant_of(settings.agent)),
            settings.agent,
            lease_ttl_ms=settings.lease_ttl_ms,
        )
        handed = await asyncio.wait_for(queue.hand_back_dead(worker_id), HAND_BACK_TIMEOUT_S)
        if handed:
            logging.getLogger(__name__).info(
                "handed back %d sessions of dead worker %s", handed, worker_id
            )
    finally:
        await redis.aclose()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = dict(os.environ)
    settings = settings_from_env(env)
    redis_settings = RedisSettings.from_env(env)
    port = int(env.get("PADDOCK_METRICS_PORT", "9090"))
    processes = int(env.get("PADDOCK_WORKER_PROCESSES", "1"))

    def worker_id(pid: int) -> str:
        return f"{settings.worker_id}-{pid}" if processes > 1 else settings.worker_id

    def worker_process(slot: int) -> int:
        # Threads and sockets are made here, after the fork, never in the parent.
        if port:
            start_http_server(port + slot)
        own = replace(settings, worker_id=worker_id(os.getpid()))
        asyncio.run(serve(own, redis_settings))
        return 0

    def on_death(pid: int) -> None:
        # Before the replacement is forked (with one process it has the same name), and
        # closed by then: the next fork inherits no socket.
        asyncio.run(hand_back_dead(settings, redis_settings, worker_id(pid)))

    raise SystemExit(run_forked(processes, worker_process, on_death))


if __name__ == "__main__":
    main()
