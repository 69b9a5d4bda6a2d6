"""`python -m paddock.gateway`: the Managed-Agents-compatible HTTP API.

PADDOCK_REDIS_URL                 the event log (redis:// or rediss://)
PADDOCK_REDIS_USERNAME            its ACL user (paddock-gateway)
PADDOCK_REDIS_PASSWORD[_FILE]     its password, or a file holding it
PADDOCK_REDIS_CA_FILE             the CA bundle of a rediss:// server
PADDOCK_GATEWAY_NAMESPACE         namespace of the API key Secrets
PADDOCK_GATEWAY_HOST / _PORT      listen address (default 0.0.0.0:8080)
PADDOCK_DEFAULT_ANTHROPIC_SECRET  `name/key` of the Claude API key of Agents created
                                  through the API (default anthropic/api-key)
PADDOCK_METRICS_PORT              Prometheus metrics (default 9090; 0 disables)
KUBECONFIG                        unset in a pod: the in-cluster ServiceAccount
PADDOCK_GATEWAY_KUBERNETES_AUTH   accept Kubernetes bearer tokens (default true)
PADDOCK_GATEWAY_DEFAULT_NAMESPACE namespace of Kubernetes identities without
                                  `x-paddock-namespace` (default: the header is required)
PADDOCK_GATEWAY_TOKEN_AUDIENCES   audiences Kubernetes tokens must carry (comma-separated)
PADDOCK_GATEWAY_RATE_LIMIT / _BURST  requests a second per credential, and the burst
                                  (default 20 and 200; rate 0 disables)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from prometheus_client import start_http_server

from paddock.gateway.app import create_app, start
from paddock.gateway.common import Gateway
from paddock.gateway.config import GatewayConfig, config_from_env

log = logging.getLogger("paddock.gateway")


async def serve(config: GatewayConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner, port = await start(create_app(Gateway.connect(config)), config.host, config.port)
    log.info("gateway listening on %s:%d", config.host, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = config_from_env(os.environ)
    if config.metrics_port:
        start_http_server(config.metrics_port)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
