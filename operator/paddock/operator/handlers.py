"""What kopf runs: the operator's start-up and shutdown.

kopf hosts the process (start-up and cleanup hooks, the liveness endpoint, signal handling
and graceful shutdown, logging); it watches nothing. Every resource is reconciled by the
level-triggered `Controller` (`controller.py`), led by one Redis lease: see the decision
record in docs/architecture.md.

Run with `python -m paddock.operator` (or `kopf run --standalone -m paddock.operator.handlers`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import kopf
from redis.asyncio import BlockingConnectionPool, Redis

from paddock.eventlog import connect
from paddock.kube import KubeClient
from paddock.operator.controller import Controller, informers
from paddock.operator.leases import Leadership, lease_key
from paddock.operator.runtime import OperatorSettings, Runtime
from paddock.operator.sandboxes import Sandboxes


@dataclass
class Paddock:
    """What the running operator holds, kept in kopf's memo."""

    rt: Runtime
    controller: Controller
    tasks: list[asyncio.Task[None]]


@kopf.on.startup()
async def startup(memo: kopf.Memo, **_: Any) -> None:
    config = OperatorSettings.from_env(dict(os.environ))
    kube = KubeClient.from_environment()
    # The event log's client settings (see `connect`), with a pool whose callers wait for
    # one of 64 connections rather than fail when all are taken.
    redis = Redis(
        connection_pool=BlockingConnectionPool.from_url(
            config.redis.url, max_connections=64, timeout=None, **config.redis.options()
        )
    )
    rt = Runtime(config, kube, redis)
    # The lease has a client of its own: behind 64 busy callers of the shared pool, a
    # renewal would wait past the TTL and the replica would lose its lease to load.
    lease = Leadership(connect(config.redis), lease_key(config.namespaces), config.identity)
    controller = Controller(rt, Sandboxes(rt), lease)
    rt.informers.update(informers(rt, controller))
    tasks = [
        *(asyncio.create_task(informer.run()) for informer in rt.informers.values()),
        asyncio.create_task(controller.run()),
    ]
    memo["paddock"] = Paddock(rt, controller, tasks)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    paddock: Paddock = memo["paddock"]
    for task in paddock.tasks:
        task.cancel()
    await asyncio.gather(*paddock.tasks, return_exceptions=True)
    await paddock.rt.close()
    await paddock.controller.lease.redis.aclose()
