"""Tenants' Redis users: the operator gives every namespace with an Agent a harness user that
reaches only that namespace's keys (`paddock.eventlog.acl`), with a random password kept in
the namespace's `paddock-redis-harness` Secret (which only the harness container reads).

Redis keeps users in memory, so a restarted Redis, or an external one, has none: the user
is checked on every Agent reconcile (each resync, every 10 s) and set again when it is
missing or has another password. The password never leaves the Secret and this process;
Redis stores its SHA-256.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

from paddock.eventlog import provision_tenant, tenant_has_password
from paddock.kube import ApiError
from paddock.models import Agent
from paddock.operator import render
from paddock.operator.runtime import Runtime


class TenantUsers:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._passwords: dict[str, str] = {}
        self._set: set[str] = set()
        """Tenants this process has set (its rules may be newer than what Redis has)."""
        self._owners: set[str] = set()
        """Agents (uids) this process has seen among their tenant Secret's owners."""

    def forget(self) -> None:
        """Read the Secrets again (a new leadership: someone may have rotated one)."""
        self._passwords.clear()
        self._set.clear()
        self._owners.clear()

    async def ensure(self, agent: Agent) -> None:
        """The tenant of ``agent`` has its Secret, owned by ``agent`` among others, and Redis
        knows its user with that password."""
        namespace = render.namespace_of(agent)
        if agent.metadata.uid not in self._owners:
            await self._adopt(namespace, agent)
        password = self._passwords.get(namespace) or await self._password(namespace, agent)
        redis = self.rt.redis
        if namespace in self._set and await tenant_has_password(redis, namespace, password):
            return
        await provision_tenant(redis, namespace, password)
        self._set.add(namespace)

    async def _adopt(self, namespace: str, agent: Agent) -> None:
        """Add ``agent`` to the Secret's owners and take the password from it (the Secret may
        have been collected with the namespace's last Agent and made anew since)."""
        found = await self.rt.kube.find("v1", "Secret", namespace, render.REDIS_SECRET)
        if found is None:
            self._passwords.pop(namespace, None)
            return  # _password makes it, owned by this Agent
        self._remember(namespace, found)
        meta = found["metadata"]
        owners = meta.get("ownerReferences") or []
        if not any(o.get("uid") == agent.metadata.uid for o in owners):
            # resourceVersion: two Agents adopting at once must not drop each other.
            await self.rt.kube.patch(
                "v1",
                "Secret",
                namespace,
                render.REDIS_SECRET,
                {
                    "metadata": {
                        "resourceVersion": meta["resourceVersion"],
                        "ownerReferences": [*owners, render.tenant_owner(agent)],
                    }
                },
            )
        self._owners.add(agent.metadata.uid or "")

    async def _password(self, namespace: str, agent: Agent) -> str:
        kube = self.rt.kube
        found = await kube.find("v1", "Secret", namespace, render.REDIS_SECRET)
        if found is None:
            password = secrets.token_urlsafe(32)
            try:
                await kube.create(render.redis_secret(namespace, password, self._ca_pem(), agent))
                self._owners.add(agent.metadata.uid or "")
                self._passwords[namespace] = password
                return password
            except ApiError as exc:
                if exc.status != 409:  # 409: another Agent's reconcile made it meanwhile
                    raise
            found = await kube.get("v1", "Secret", namespace, render.REDIS_SECRET)
        return self._remember(namespace, found)

    def _remember(self, namespace: str, secret: dict[str, Any]) -> str:
        password = base64.b64decode((secret.get("data") or {}).get("password", "")).decode()
        if not password:
            raise ValueError(f"Secret {namespace}/{render.REDIS_SECRET} has no password")
        self._passwords[namespace] = password
        return password

    def _ca_pem(self) -> str | None:
        redis = self.rt.settings.redis
        if not self.rt.settings.render.redis_ca:
            return None
        return redis.ca_pem or Path(redis.ca_file or "").read_text()
