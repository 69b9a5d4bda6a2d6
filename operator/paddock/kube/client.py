"""A small async client of the Kubernetes API, for what kopf does not do: server-side apply
(each writer owns its fields, including its own conditions), creates, deletes, lists.

Credentials come from the kubeconfig or the in-cluster service account, loaded by the
`kubernetes` package; requests go through httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

MAX_CONNECTIONS = 64
# apiVersion, kind -> plural: the kinds the operator touches.
PLURALS = {
    ("v1", "Namespace"): "namespaces",
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("paddock.dev/v1alpha1", "Agent"): "agents",
    ("paddock.dev/v1alpha1", "Environment"): "environments",
    ("paddock.dev/v1alpha1", "Session"): "sessions",
}


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body

    @property
    def reason(self) -> str:
        try:
            return str(json.loads(self.body).get("reason", ""))
        except ValueError:
            return ""


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """Someone else changed the object first (409, or a failed JSON-patch `test`)."""


def path(
    api_version: str, kind: str, namespace: str | None, name: str = "", subresource: str = ""
) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURALS[(api_version, kind)]
    url = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        url += f"/{quote(name)}"
    if subresource:
        url += f"/{subresource}"
    return url


def raise_for_status(status: int, text: str) -> None:
    """The apiserver's answer as an exception, if it is an error."""
    if status == 404:
        raise NotFound(404, text)
    if status == 409:
        raise Conflict(status, text)
    if status >= 400:
        raise ApiError(status, text)


@dataclass
class Credentials:
    """Where the apiserver is and how to authenticate, as the `kubernetes` package resolves
    them (kubeconfig with client certificates, tokens or exec plugins, or in-cluster)."""

    host: str
    ssl_context: ssl.SSLContext
    headers: dict[str, str]

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """In-cluster credentials when running in a pod, else the kubeconfig."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            # The package reads $KUBECONFIG once at import; read it now.
            config_file = kubeconfig or os.environ.get("KUBECONFIG")
            k8s_config.load_kube_config(config_file=config_file, client_configuration=configuration)
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        headers = {}
        token = configuration.api_key.get("authorization") or configuration.api_key.get(
            "BearerToken"
        )
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        return cls(configuration.host, context, headers)


@dataclass
class KubeClient:
    http: httpx.AsyncClient
    # Requests beyond the connection pool wait here, not in httpcore's pool, whose
    # bookkeeping costs grow with (waiting requests x connections): with hundreds of
    # concurrent handlers it took most of the operator's CPU.
    _slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS), repr=False, compare=False
    )

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster credentials when running in a pod, else the kubeconfig."""
        credentials = Credentials.load(kubeconfig)
        # Every connection stays open: a new one costs a TLS handshake.
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        http = httpx.AsyncClient(
            base_url=credentials.host,
            verify=credentials.ssl_context,
            headers=credentials.headers,
            timeout=30,
            limits=limits,
        )
        return cls(http)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        # The apiserver sheds load (and answers while its storage starts) with 429: wait
        # as it says, a few times, before giving the error to the handler's own retry.
        for _ in range(5):
            async with self._slots:
                response = await self.http.request(method, url, **kwargs)
            if response.status_code != 429:
                break
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "1") or 1), 5))
        raise_for_status(response.status_code, response.text)
        return response.json() if response.content else {}

    async def apply(
        self, obj: dict[str, Any], *, manager: str, subresource: str = ""
    ) -> dict[str, Any]:
        """Server-side apply of ``obj`` (create or update) as field manager ``manager``."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)
        return await self._call(
            "PATCH",
            url,
            content=json.dumps(obj),
            headers={"Content-Type": APPLY},
            params={"fieldManager": manager, "force": "true"},
        )

    async def apply_status(
        self, resource: dict[str, Any], status: dict[str, Any], manager: str
    ) -> dict[str, Any]:
        """Server-side apply of ``status`` to the status subresource of ``resource``: the
        fields (and, in map lists, the items) ``manager`` sets are its own, others' stay."""
        meta = resource["metadata"]
        return await self.apply(
            {
                "apiVersion": resource["apiVersion"],
                "kind": resource["kind"],
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "status": status,
            },
            manager=manager,
            subresource="status",
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return await self._call(
            "POST", path(obj["apiVersion"], obj["kind"], meta.get("namespace")), json=obj
        )

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", path(api_version, kind, namespace, name))

    async def find(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.get(api_version, kind, namespace, name)
        except NotFound:
            return None

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        params = (
            {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
        )
        return (await self._call("GET", path(api_version, kind, namespace), params=params))["items"]

    async def count(
        self, api_version: str, kind: str, namespace: str | None, *, labels: dict[str, str]
    ) -> int:
        """How many objects match: a metadata-only list (the server gives no count for a
        label-selected list), a few hundred bytes an object instead of the whole object."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())}
        page = await self._call(
            "GET",
            path(api_version, kind, namespace),
            params=params,
            headers={"Accept": METADATA_LIST},
        )
        return len(page.get("items") or [])  # an empty list has "items": null

    async def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        body: Any,
        *,
        content_type: str = MERGE,
        subresource: str = "",
    ) -> dict[str, Any]:
        """Patch; a JSON patch whose `test` fails raises `Conflict` (the apiserver says 422)."""
        try:
            return await self._call(
                "PATCH",
                path(api_version, kind, namespace, name, subresource),
                content=json.dumps(body),
                headers={"Content-Type": content_type},
            )
        except ApiError as exc:
            if content_type == JSON_PATCH and exc.status == 422:
                raise Conflict(exc.status, exc.body) from exc
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete; False if it was already gone."""
        try:
            await self._call("DELETE", path(api_version, kind, namespace, name))
        except NotFound:
            return False
        return True

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: dict[str, str] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every object as ("ADDED", obj), then changes as they happen, forever: a list, then
        watches from the last resourceVersion seen. When history expired (410) it lists
        again; objects gone meanwhile come as "DELETED", the others as "ADDED" again."""
        url = path(api_version, kind, namespace)
        selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        known: dict[str, dict[str, Any]] = {}
        while True:
            listed = await self._call("GET", url, params={"labelSelector": selector})
            current = {item["metadata"]["uid"]: item for item in listed.get("items") or []}
            for uid, obj in known.items():
                if uid not in current:
                    yield "DELETED", obj
            for obj in current.values():
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                yield "ADDED", obj
            known = current
            version = listed["metadata"]["resourceVersion"]
            while version:
                params = {
                    "labelSelector": selector,
                    "watch": "1",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "300",
                }
                try:
                    async with self.http.stream("GET", url, params=params, timeout=None) as reply:
                        if reply.status_code >= 400:
                            version = ""  # list again, after a breath
                            await asyncio.sleep(1)
                            continue
                        async for line in reply.aiter_lines():
                            if not line:
                                continue
                            event = json.loads(line)
                            what, obj = event["type"], event["object"]
                            if what == "ERROR":  # 410 Gone: the history expired
                                version = ""
                                break
                            version = obj["metadata"]["resourceVersion"]
                            if what == "BOOKMARK":
                                continue
                            if what == "DELETED":
                                known.pop(obj["metadata"]["uid"], None)
                            else:
                                known[obj["metadata"]["uid"]] = obj
                            yield what, obj
                except (httpx.TransportError, httpx.StreamError):
                    await asyncio.sleep(1)
