"""Configuration of `python -m paddock.gateway`, from the environment (the Helm chart sets it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from paddock.models import SecretKeyReference


@dataclass(frozen=True)
class GatewayConfig:
    redis_url: str
    """PADDOCK_REDIS_URL: the event log."""
    namespace: str
    """PADDOCK_GATEWAY_NAMESPACE: where the API key Secrets live."""
    default_anthropic_secret: SecretKeyReference
    """PADDOCK_DEFAULT_ANTHROPIC_SECRET (`name/key`, default `anthropic/api-key`): the
    `credentials.anthropicApiKey` of Agents created through the API, in the tenant's
    namespace."""
    host: str = "0.0.0.0"
    """PADDOCK_GATEWAY_HOST."""
    port: int = 8080
    """PADDOCK_GATEWAY_PORT."""
    metrics_port: int = 9090
    """PADDOCK_METRICS_PORT: Prometheus metrics; 0 disables them."""
    kubeconfig: str | None = None
    """KUBECONFIG; unset inside a pod: the in-cluster ServiceAccount."""


def parse_secret_ref(text: str) -> SecretKeyReference:
    """`name/key` as a Secret key reference; ValueError if malformed."""
    name, sep, key = text.partition("/")
    if not sep:
        raise ValueError(f"expected <secret name>/<key>, got {text!r}")
    return SecretKeyReference(name=name, key=key)


def config_from_env(env: Mapping[str, str]) -> GatewayConfig:
    """The configuration the environment describes; KeyError/ValueError if incomplete."""
    return GatewayConfig(
        redis_url=env["PADDOCK_REDIS_URL"],
        namespace=env["PADDOCK_GATEWAY_NAMESPACE"],
        default_anthropic_secret=parse_secret_ref(
            env.get("PADDOCK_DEFAULT_ANTHROPIC_SECRET") or "anthropic/api-key"
        ),
        host=env.get("PADDOCK_GATEWAY_HOST") or "0.0.0.0",
        port=int(env.get("PADDOCK_GATEWAY_PORT") or 8080),
        metrics_port=int(env.get("PADDOCK_METRICS_PORT") or 9090),
        kubeconfig=env.get("KUBECONFIG") or None,
    )
