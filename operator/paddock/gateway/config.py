"""Configuration of `python -m paddock.gateway`, from the environment (the Helm chart sets it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from paddock.eventlog import RedisSettings
from paddock.models import SecretKeyReference

DEFAULT_FILES_MAX_BYTES = 500 * 1024 * 1024
"""The Files API's documented limit on one file (500 MB)."""


@dataclass(frozen=True)
class GatewayConfig:
    redis: RedisSettings
    """PADDOCK_REDIS_URL (and _USERNAME, _PASSWORD or _PASSWORD_FILE, _CA_FILE): the event
    log, as the user `paddock-gateway`."""
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
    kubernetes_auth: bool = True
    """PADDOCK_GATEWAY_KUBERNETES_AUTH (`true`/`false`): accept Kubernetes bearer tokens
    (TokenReview, then SubjectAccessReview) besides API keys."""
    default_namespace: str | None = None
    """PADDOCK_GATEWAY_DEFAULT_NAMESPACE: the namespace of a Kubernetes identity's request
    without `x-paddock-namespace`; unset: the header is required."""
    token_audiences: tuple[str, ...] = ()
    """PADDOCK_GATEWAY_TOKEN_AUDIENCES (comma-separated): audiences a Kubernetes token must
    be for; empty: the apiserver's own."""
    rate_limit: float = 20.0
    """PADDOCK_GATEWAY_RATE_LIMIT: requests a second per credential; 0 disables."""
    rate_burst: int = 200
    """PADDOCK_GATEWAY_RATE_BURST: requests a credential may send at once."""
    files_dir: Path | None = None
    """PADDOCK_GATEWAY_FILES_DIR: where the Files API keeps files (a directory per tenant
    namespace; the chart mounts a PersistentVolumeClaim); unset: the Files API answers 404."""
    files_max_bytes: int = DEFAULT_FILES_MAX_BYTES
    """PADDOCK_GATEWAY_FILES_MAX_BYTES: the largest file an upload may carry (413 beyond)."""


def parse_secret_ref(text: str) -> SecretKeyReference:
    """`name/key` as a Secret key reference; ValueError if malformed."""
    name, sep, key = text.partition("/")
    if not sep:
        raise ValueError(f"expected <secret name>/<key>, got {text!r}")
    return SecretKeyReference(name=name, key=key)


def _flag(text: str | None, default: bool) -> bool:
    if not text:
        return default
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def config_from_env(env: Mapping[str, str]) -> GatewayConfig:
    """The configuration the environment describes; KeyError/ValueError if incomplete."""
    return GatewayConfig(
        redis=RedisSettings.from_env(env),
        namespace=env["PADDOCK_GATEWAY_NAMESPACE"],
        default_anthropic_secret=parse_secret_ref(
            env.get("PADDOCK_DEFAULT_ANTHROPIC_SECRET") or "anthropic/api-key"
        ),
        host=env.get("PADDOCK_GATEWAY_HOST") or "0.0.0.0",
        port=int(env.get("PADDOCK_GATEWAY_PORT") or 8080),
        metrics_port=int(env.get("PADDOCK_METRICS_PORT") or 9090),
        kubeconfig=env.get("KUBECONFIG") or None,
        kubernetes_auth=_flag(env.get("PADDOCK_GATEWAY_KUBERNETES_AUTH"), True),
        default_namespace=env.get("PADDOCK_GATEWAY_DEFAULT_NAMESPACE") or None,
        token_audiences=tuple(
            a.strip()
            for a in env.get("PADDOCK_GATEWAY_TOKEN_AUDIENCES", "").split(",")
            if a.strip()
        ),
        rate_limit=float(env.get("PADDOCK_GATEWAY_RATE_LIMIT") or 20),
        rate_burst=int(env.get("PADDOCK_GATEWAY_RATE_BURST") or 200),
        files_dir=Path(env["PADDOCK_GATEWAY_FILES_DIR"])
        if env.get("PADDOCK_GATEWAY_FILES_DIR")
        else None,
        files_max_bytes=int(env.get("PADDOCK_GATEWAY_FILES_MAX_BYTES") or DEFAULT_FILES_MAX_BYTES),
    )
