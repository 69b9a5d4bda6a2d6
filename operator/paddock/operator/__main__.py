"""`python -m paddock.operator`: the operator.

PADDOCK_REDIS_URL         the event log
PADDOCK_IMAGE             the Paddock image of harness pods (harness + proxy)
PADDOCK_SANDBOX_IMAGE     sandbox image for Environments that keep the default
PADDOCK_ANTHROPIC_URL     the Claude API the proxies forward to (default the public API)
PADDOCK_WATCH_NAMESPACES  comma-separated namespaces to serve; empty: all
PADDOCK_PEERING           kopf peering name: replicas elect one active operator (HA)
PADDOCK_METRICS_PORT      Prometheus metrics (default 9090; 0 disables)
PADDOCK_HEALTH_PORT       liveness endpoint /healthz (unset: none)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

import kopf
from prometheus_client import start_http_server

from paddock.operator import handlers  # noqa: F401  (registers the handlers)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = os.environ
    namespaces = [
        n.strip() for n in env.get("PADDOCK_WATCH_NAMESPACES", "").split(",") if n.strip()
    ]
    peering = env.get("PADDOCK_PEERING") or None
    metrics_port = int(env.get("PADDOCK_METRICS_PORT", "9090"))
    if metrics_port:
        start_http_server(metrics_port)
    health = env.get("PADDOCK_HEALTH_PORT")
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=peering is None,
            peering_name=peering,
            # Peers of equal priority all pause: each replica takes its own, one is active.
            priority=random.randint(1, 2**31) if peering else None,
            liveness_endpoint=f"http://0.0.0.0:{health}/healthz" if health else None,
        )
    )


if __name__ == "__main__":
    main()
