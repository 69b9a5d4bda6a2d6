"""API keys: Kubernetes Secrets in the gateway's namespace, each granting one namespace.

A key Secret is labelled ``paddock.dev/api-key: "true"`` and holds ``api-key`` (the key)
and ``namespace`` (the tenant namespace the key grants). Keys are cached and re-listed
after ``ttl_s``; an unknown key triggers an early re-list at most every ``miss_interval_s``,
so a new key works within a second while a flood of wrong keys costs the apiserver
one list a second.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time

from paddock.kube import ApiError, KubeClient

API_KEY_LABEL = "paddock.dev/api-key"
log = logging.getLogger(__name__)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _field(data: dict[str, str], name: str) -> str | None:
    try:
        return base64.b64decode(data[name], validate=True).decode().strip() or None
    except (KeyError, binascii.Error, UnicodeDecodeError):
        return None


class ApiKeys:
    """Maps API keys to the namespace they grant."""

    def __init__(
        self, kube: KubeClient, namespace: str, *, ttl_s: float = 30.0, miss_interval_s: float = 1.0
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.miss_interval_s = miss_interval_s
        self._keys: list[tuple[bytes, str]] = []
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def namespace_for(self, key: str) -> str | None:
        """The namespace ``key`` grants, or None if no Secret holds it.

        Raises `paddock.kube.ApiError` only if the keys could never be listed.
        """
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at > self.ttl_s:
            await self._reload(max_age=self.ttl_s)
        found = self._match(key)
        if found is None:
            await self._reload(max_age=self.miss_interval_s)
            found = self._match(key)
        return found

    def _match(self, key: str) -> str | None:
        digest = _digest(key)
        found = None
        # Compare with every key, in constant time each: no early exit to time.
        for candidate, namespace in self._keys:
            if hmac.compare_digest(candidate, digest):
                found = namespace
        return found

    async def _reload(self, *, max_age: float) -> None:
        async with self._lock:
            # Whoever waited for the lock may find the keys fresh already.
            if self._loaded_at is not None and time.monotonic() - self._loaded_at <= max_age:
                return
            try:
                secrets = await self.kube.list(
                    "v1", "Secret", self.namespace, selector=f"{API_KEY_LABEL}=true"
                )
            except ApiError:
                if self._loaded_at is None:
                    raise
                log.warning("listing API keys failed; using the cached ones", exc_info=True)
                self._loaded_at = time.monotonic()
                return
            keys = []
            for secret in secrets:
                data = secret.get("data") or {}
                key, namespace = _field(data, "api-key"), _field(data, "namespace")
                if key and namespace:
                    keys.append((_digest(key), namespace))
                else:
                    name = secret.get("metadata", {}).get("name")
                    log.warning("API key Secret %s lacks api-key or namespace; ignored", name)
            self._keys = keys
            self._loaded_at = time.monotonic()
