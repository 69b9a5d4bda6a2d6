"""`python -m paddock.operator`: the operator.

PADDOCK_REDIS_URL         the event log (redis:// or rediss://)
PADDOCK_REDIS_USERNAME    its ACL user (paddock-operator: every command, ACL administration)
PADDOCK_REDIS_PASSWORD    its password (or PADDOCK_REDIS_PASSWORD_FILE, a file holding it)
PADDOCK_REDIS_CA_FILE     the CA bundle of a rediss:// server (copied to tenants' Secrets)
PADDOCK_HARNESS_REDIS_URL the URL harness pods use, if not the same (no credentials)
PADDOCK_IMAGE             the Paddock image of harness pods (harness + proxy)
PADDOCK_SANDBOX_IMAGE     sandbox image for Environments that keep the default
PADDOCK_ANTHROPIC_URL     the Claude API the proxies forward to (default the public API)
PADDOCK_GATEWAY_URL       the gateway's in-cluster URL, given to harness pods (session files)
PADDOCK_GATEWAY_NAMESPACE the gateway's namespace, PADDOCK_GATEWAY_LABELS (k=v,...) its pods'
                          labels, PADDOCK_GATEWAY_POD_PORT their port: harness egress to them
PADDOCK_PACKAGE_PROXY_URL the package proxy (http://host:port) Environment packages install
                          through; PADDOCK_PACKAGE_PROXY_TOKEN_KEY_FILE its token key,
                          PADDOCK_PACKAGE_PROXY_NAMESPACE and _LABELS its pods (sandbox egress)
PADDOCK_PIP_INDEX_URL     pip's index for Environment packages (a mirror); default pip's own
PADDOCK_NPM_REGISTRY      npm's registry for Environment packages; default npm's own
PADDOCK_PROXY_ADDRESS_EXCEPTIONS  development and tests only: ip:port pairs (comma-separated)
                          on loopback or private networks the Agents' proxies may reach
                          (an OAuth token endpoint of a test)
PADDOCK_APT_SOURCES       apt's sources for Environment packages (sources.list one-line
                          entries, one a line); default the sandbox image's own
PADDOCK_WATCH_NAMESPACES  comma-separated namespaces to serve; empty: all
PADDOCK_THREAD_SANDBOXES  the most sandboxes one session's threads hold at once (default 20)
PADDOCK_METRICS_PORT      Prometheus metrics (default 9090; 0 disables)
PADDOCK_HEALTH_PORT       liveness endpoint /healthz (unset: none)
"""

from __future__ import annotations

import asyncio
import logging
import os

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
    metrics_port = int(env.get("PADDOCK_METRICS_PORT", "9090"))
    if metrics_port:
        start_http_server(metrics_port)
    health = env.get("PADDOCK_HEALTH_PORT")
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            # Replicas elect their leader through a Redis lease (`leases.py`), not kopf's
            # peering.
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{health}/healthz" if health else None,
        )
    )


if __name__ == "__main__":
    main()
