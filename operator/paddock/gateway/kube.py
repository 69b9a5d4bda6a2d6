"""The few Kubernetes API calls the gateway makes, asynchronous, over httpx.

The `kubernetes` package only resolves the configuration (kubeconfig with client
certificates, tokens or exec plugins; or the in-cluster ServiceAccount, whose token file
it re-reads as it rotates). Requests go through one `httpx.AsyncClient`, so the gateway's
event loop never waits on a thread pool and calls to the apiserver multiplex over a few
connections.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from paddock.models.common import GROUP, VERSION

_JSON_MERGE = {"Content-Type": "application/merge-patch+json"}
_ATTEMPTS = 4


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header or 1), 0.1), 2.0)
    except ValueError:
        return 1.0


class KubeError(Exception):
    """The apiserver refused a request, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Kube:
    """Namespaced reads and writes of Paddock objects and Secrets.

    Every method raises ``KubeError`` when the apiserver answers with an error (``get``
    returns None on 404 instead) or cannot be reached.
    """

    def __init__(self, configuration: k8s_client.Configuration) -> None:
        self._configuration = configuration
        # An exec plugin may run a command to refresh the token: not on the event loop.
        self._refresh_in_thread = configuration.refresh_api_key_hook is not None
        tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:  # insecure-skip-tls-verify
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            tls.load_cert_chain(configuration.cert_file, configuration.key_file)
        self.http = httpx.AsyncClient(
            base_url=configuration.host,
            verify=tls,
            timeout=httpx.Timeout(15, connect=5),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None) -> Kube:
        """The client of ``kubeconfig``; with None, the in-cluster ServiceAccount when
        running in a pod, else the default kubeconfig (~/.kube/config)."""
        configuration = k8s_client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(configuration)

    async def close(self) -> None:
        await self.http.aclose()

    async def _headers(self) -> dict[str, str]:
        if self._refresh_in_thread:
            token = await asyncio.to_thread(
                self._configuration.get_api_key_with_prefix, "BearerToken"
            )
        else:
            token = self._configuration.get_api_key_with_prefix("BearerToken")
        return {"Authorization": token} if token else {}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; the decoded JSON answer. A 429 (the apiserver's priority and
        fairness shedding load) is retried after its Retry-After, as client-go does."""
        for attempt in range(_ATTEMPTS):
            try:
                response = await self.http.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    headers={**await self._headers(), **(headers or {})},
                )
            except httpx.HTTPError as exc:
                raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc
            if response.status_code != 429 or attempt == _ATTEMPTS - 1:
                break
            await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {}
            raise KubeError(
                response.status_code,
                str(status.get("reason") or response.reason_phrase),
                str(status.get("message") or response.text[:500]),
            )
        result: dict[str, Any] = response.json()
        return result

    # Paddock objects (`plural` is agents, environments or sessions).

    @staticmethod
    def _path(plural: str, namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", self._path(plural, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, plural: str, namespace: str, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        answer = await self.request("GET", self._path(plural, namespace), params=params)
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request(
            "POST", self._path(plural, namespace), json=body, params={"fieldValidation": "Strict"}
        )

    async def replace(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``body``; its ``metadata.resourceVersion`` makes it fail with 409 if the
        object changed since it was read."""
        path = self._path(plural, namespace, body["metadata"]["name"])
        return await self.request("PUT", path, json=body, params={"fieldValidation": "Strict"})

    async def patch(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch."""
        path = self._path(plural, namespace, name)
        return await self.request("PATCH", path, json=patch, headers=_JSON_MERGE)

    async def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete; the answer is the object (still there while finalizers run) or a Status
        (gone at once). None if it did not exist."""
        try:
            return await self.request("DELETE", self._path(plural, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_secrets(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        answer = await self.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/secrets",
            params={"labelSelector": label_selector},
        )
        items: list[dict[str, Any]] = answer.get("items", [])
        return items
