"""A small async client of the Kubernetes API, for what kopf does not do: server-side apply
(each writer owns its fields, including its own conditions), creates, deletes, lists.

Credentials come from the kubeconfig (resolved by the `kubernetes` package) or the in-cluster
ServiceAccount, through `Credentials`, which every Kubernetes client of Paddock uses and which
gives each request the current token; requests go through httpx.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config import incluster_config

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


class _TokenFile:
    """A bearer token file (the ServiceAccount token the kubelet rotates), re-read whenever
    it changed: the kubelet swaps a ``..data`` symlink (new inode) or rewrites the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int] | None = None
        self._token = ""

    def token(self) -> str:
        """The current token. Raises OSError if the file was never readable; after that, a
        read that fails (a rotation caught half-way) keeps the last token."""
        try:
            stat = os.stat(self.path)  # follows the symlinks
            signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            # A file changed within the last two seconds may change again within the same
            # mtime tick: read it every time until it is older.
            recent = time.time() - stat.st_mtime < 2
            if signature != self._signature or recent:
                self._token = self.path.read_text().strip()
                self._signature = signature
        except OSError:
            if not self._token:
                raise
        return self._token


@dataclass
class Credentials:
    """Where the apiserver is and how to authenticate: the one loader of every Kubernetes
    client (operator, gateway, runner). Kubeconfigs are resolved by the `kubernetes` package
    (client certificates, tokens, exec plugins); in a pod, the ServiceAccount.

    The bearer token is asked for on every request (`authorization`), never cached by the
    caller: a token file (the in-cluster ServiceAccount's, or a kubeconfig's ``tokenFile``)
    is re-read when it changes, and an exec plugin's token is refreshed by the `kubernetes`
    package when it expires."""

    host: str
    ssl_context: ssl.SSLContext
    configuration: k8s_client.Configuration | None = None
    """The kubeconfig's resolved configuration (its token and refresh hook), if any."""
    token_file: Path | None = None
    """The bearer token file, re-read as it changes: the in-cluster ServiceAccount token,
    or a kubeconfig user's ``tokenFile``."""
    _token_file: _TokenFile | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.token_file is not None:
            self._token_file = _TokenFile(self.token_file)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """``kubeconfig`` if given; else the in-cluster ServiceAccount when running in a pod;
        else $KUBECONFIG or ~/.kube/config."""
        if kubeconfig is None and os.environ.get(incluster_config.SERVICE_HOST_ENV_NAME):
            return cls.in_cluster()
        configuration = k8s_client.Configuration()
        # The package reads $KUBECONFIG once at import; read it now.
        config_file = kubeconfig or os.environ.get("KUBECONFIG")
        k8s_config.load_kube_config(config_file=config_file, client_configuration=configuration)
        token_file = _kubeconfig_token_file(config_file)
        return cls(configuration.host, _tls(configuration), configuration, token_file)

    @classmethod
    def in_cluster(
        cls,
        token_file: Path = Path(incluster_config.SERVICE_TOKEN_FILENAME),
        ca_file: Path = Path(incluster_config.SERVICE_CERT_FILENAME),
        environ: Mapping[str, str] = os.environ,
    ) -> Credentials:
        """The pod's ServiceAccount: the apiserver from ``KUBERNETES_SERVICE_HOST``/``_PORT``,
        the cluster CA and the token file (re-read as it rotates)."""
        configuration = k8s_client.Configuration()
        loader = incluster_config.InClusterConfigLoader(
            token_filename=str(token_file),
            cert_filename=str(ca_file),
            try_refresh_token=False,
            environ=environ,
        )
        loader.load_and_set(configuration)
        return cls(configuration.host, _tls(configuration), token_file=token_file)

    def authorization(self) -> str | None:
        """The ``Authorization`` value for the next request, None without a token. May run
        an exec plugin (blocking): call `async_authorization` on an event loop."""
        if self._token_file is not None:
            token = self._token_file.token()
            return f"Bearer {token}" if token else None
        if self.configuration is None:
            return None
        value = self.configuration.get_api_key_with_prefix("BearerToken")
        if not value:
            return None
        return str(value) if str(value).lower().startswith("bearer ") else f"Bearer {value}"

    async def async_authorization(self) -> str | None:
        """`authorization`, with a refresh hook (an exec plugin may run a command) off the
        event loop."""
        # kubernetes declares the hook as always None (its __init__ sets it so); loaders set it.
        refresh: object = self.configuration is not None and self.configuration.refresh_api_key_hook
        if self._token_file is None and refresh:
            return await asyncio.to_thread(self.authorization)
        return self.authorization()

    async def headers(self) -> dict[str, str]:
        """The authentication headers of the next request."""
        value = await self.async_authorization()
        return {"Authorization": value} if value else {}

    def httpx_auth(self) -> httpx.Auth:
        """An httpx ``auth`` that sets the current token on every request."""
        return _HttpxAuth(self)


class _HttpxAuth(httpx.Auth):
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        value = await self.credentials.async_authorization()
        if value:
            request.headers["Authorization"] = value
        yield request


def _kubeconfig_token_file(config_file: str | None) -> Path | None:
    """The current user's ``tokenFile`` (absolute), which the `kubernetes` package reads only
    once; None if the user has none, or a ``token`` (which wins, as in kubectl), or the
    kubeconfig is a merged list of files."""
    name = config_file or os.path.expanduser(k8s_config.KUBE_CONFIG_DEFAULT_LOCATION)
    if os.pathsep in name:
        return None
    path = Path(name)
    data = yaml.safe_load(path.read_text()) or {}
    current = data.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
    users = {u.get("name"): u.get("user") or {} for u in data.get("users") or []}
    user = users.get(contexts.get(current, {}).get("user"), {})
    if "token" in user or not user.get("tokenFile"):
        return None
    return path.parent / Path(user["tokenFile"]).expanduser()


def _tls(configuration: k8s_client.Configuration) -> ssl.SSLContext:
    """The TLS context of a resolved configuration: its CA, client certificate, and
    ``insecure-skip-tls-verify``."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


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
        """``kubeconfig``; else in-cluster credentials when running in a pod, else the
        default kubeconfig."""
        return cls.from_credentials(Credentials.load(kubeconfig))

    @classmethod
    def from_credentials(cls, credentials: Credentials) -> KubeClient:
        """A client that authenticates every request with the current ``credentials``."""
        # Every connection stays open: a new one costs a TLS handshake.
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
        )
        http = httpx.AsyncClient(
            base_url=credentials.host,
            verify=credentials.ssl_context,
            auth=credentials.httpx_auth(),
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
        self, resource: dict[str, Any], status: Mapping[str, Any], manager: str
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
        answer = await self._call("GET", path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = answer["items"]
        return items

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
