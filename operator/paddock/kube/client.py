"""The async Kubernetes API client of the operator, the gateway and the local pod runner, for
what kopf does not do: server-side apply (each writer owns its fields, including its own
conditions), creates, replaces, deletes, lists, watches.

Every request goes through aiohttp: at the operator's scale (thousands of requests a minute)
the per-request CPU is what counts, and aiohttp spends a fraction of httpx's (figures in
docs/operator.md, from bench/kube_client.py). Every request asks `Credentials` for its
headers, so a rotated token applies at once. A 429 (the apiserver's priority and fairness
shedding load, or its storage starting) is retried after its Retry-After, as client-go does;
failing to get any answer (connection refused, reset, timeout) raises `ApiError` with status
0, so that every caller's ``except ApiError`` covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import aiohttp

from paddock.kube.credentials import Credentials

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

CONNECTIONS = 16
"""Requests in flight by default; more only add waiting on a 2-core apiserver. Watches
have their own connections, outside this limit."""
ATTEMPTS_429 = 5
"""Tries of a request the apiserver answers with 429, before the error goes to the caller."""
MAX_RETRY_WAIT_S = 5.0
# apiVersion, kind -> plural: the kinds Paddock touches.
PLURALS = {
    ("v1", "Namespace"): "namespaces",
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "ControllerRevision"): "controllerrevisions",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("paddock.dev/v1alpha1", "Agent"): "agents",
    ("paddock.dev/v1alpha1", "Environment"): "environments",
    ("paddock.dev/v1alpha1", "Session"): "sessions",
    ("paddock.dev/v1alpha1", "Vault"): "vaults",
}


class ApiError(Exception):
    """The apiserver refused a request, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body

    def _status(self) -> dict[str, Any]:
        try:
            status = json.loads(self.body)
        except ValueError:
            return {}
        return status if isinstance(status, dict) else {}

    @property
    def reason(self) -> str:
        """The Status's ``reason`` (``NotFound``, ``Invalid``…); else the HTTP reason phrase;
        ``Unreachable`` for status 0."""
        if reason := self._status().get("reason"):
            return str(reason)
        if self.status == 0:
            return "Unreachable"
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    @property
    def message(self) -> str:
        """The Status's ``message``; else the start of the body."""
        return str(self._status().get("message") or self.body[:500])


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


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header value asks for (RFC 9110: delay-seconds,
    or an HTTP date), never negative; None when absent or unreadable. The caller bounds it."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _selector(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items())


@dataclass
class Answer:
    """What `KubeClient._send` got: the status, the body, the Retry-After header."""

    status: int
    body: bytes
    retry_after: str | None


@dataclass
class KubeClient:
    """One aiohttp session for requests (at most ``connections`` in flight; more wait for a
    free one, which is not a timeout) and one for watches (a connection each). Make it with
    `from_environment` or `from_credentials`; the sessions start on first use, in the event
    loop that uses them."""

    credentials: Credentials
    connections: int = CONNECTIONS
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    """The longest wait for the next bytes of an answer (watches wait as long as they must)."""
    _requests: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _watches: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    known_revisions: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    """(owner uid, name) of the ControllerRevisions this client created or found: a
    revision never changes, so `revisions.record_revision` writes each once per process."""

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **options: Any) -> KubeClient:
        """``kubeconfig``; else in-cluster credentials when running in a pod, else the
        default kubeconfig. ``options`` are the client's fields (``connections``…)."""
        return cls(Credentials.load(kubeconfig), **options)

    @classmethod
    def from_credentials(cls, credentials: Credentials, **options: Any) -> KubeClient:
        """A client that authenticates every request with the current ``credentials``."""
        return cls(credentials, **options)

    def _session(self, *, watch: bool = False) -> aiohttp.ClientSession:
        session = self._watches if watch else self._requests
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0 if watch else self.connections, ssl=self.credentials.ssl_context
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.connect_timeout_s,
                    sock_read=None if watch else self.read_timeout_s,
                ),
            )
            if watch:
                self._watches = session
            else:
                self._requests = session
        return session

    async def aclose(self) -> None:
        for session in (self._requests, self._watches):
            if session is not None:
                await session.close()
        self._requests = self._watches = None

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> Answer:
        """One HTTP exchange. Raises aiohttp's errors (and TimeoutError) as they come."""
        async with self._session().request(
            method, self.credentials.host + url, params=params, data=body, headers=headers
        ) as response:
            return Answer(
                response.status, await response.read(), response.headers.get("Retry-After")
            )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call to ``url`` (a path, see `path`); the decoded JSON answer ({} if
        empty). Raises `ApiError` (`NotFound`, `Conflict`) for an error answer or none."""
        query = {k: str(v) for k, v in params.items()} if params else None
        body = content.encode() if isinstance(content, str) else content
        extra = dict(headers or {})
        if json is not None:
            body = _dumps(json)
            extra.setdefault("Content-Type", "application/json")
        for attempt in range(ATTEMPTS_429):
            # Asked for every time: a rotated ServiceAccount token applies at once.
            sent = {**await self.credentials.headers(), **extra}
            try:
                answer = await self._send(method, url, query, body, sent)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            if answer.status != 429 or attempt == ATTEMPTS_429 - 1:
                break
            wait = retry_after(answer.retry_after)
            await asyncio.sleep(min(max(1.0 if wait is None else wait, 0.1), MAX_RETRY_WAIT_S))
        raise_for_status(answer.status, answer.body.decode(errors="replace"))
        return _loads(answer.body) if answer.body else {}

    async def apply(
        self, obj: dict[str, Any], *, manager: str, subresource: str = ""
    ) -> dict[str, Any]:
        """Server-side apply of ``obj`` (create or update) as field manager ``manager``."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource)
        return await self.request(
            "PATCH",
            url,
            content=_dumps(obj),
            headers={"Content-Type": APPLY},
            params={"fieldManager": manager, "force": "true"},
        )

    async def apply_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        manager: str,
    ) -> dict[str, Any]:
        """Server-side apply of ``status`` to the status subresource of the object: the
        fields (and, in map lists, the items) ``manager`` sets are its own, others' stay."""
        return await self.apply(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "status": status,
            },
            manager=manager,
            subresource="status",
        )

    async def create(
        self, obj: dict[str, Any], *, field_validation: str | None = None
    ) -> dict[str, Any]:
        """Create ``obj``; ``field_validation`` ``"Strict"`` refuses unknown fields."""
        meta = obj["metadata"]
        params = {"fieldValidation": field_validation} if field_validation else None
        return await self.request(
            "POST",
            path(obj["apiVersion"], obj["kind"], meta.get("namespace")),
            json=obj,
            params=params,
        )

    async def replace(
        self, obj: dict[str, Any], *, field_validation: str | None = None
    ) -> dict[str, Any]:
        """PUT ``obj``; its ``metadata.resourceVersion`` makes it fail with `Conflict` if the
        object changed since it was read."""
        meta = obj["metadata"]
        params = {"fieldValidation": field_validation} if field_validation else None
        return await self.request(
            "PUT",
            path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
            json=obj,
            params=params,
        )

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", path(api_version, kind, namespace, name))

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
        selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The objects whose labels match ``labels`` (each key=value) or ``selector`` (a
        label selector as the API takes it, ``a=b,c``)."""
        selector = selector or _selector(labels)
        params = {"labelSelector": selector} if selector else None
        items = (await self.request("GET", path(api_version, kind, namespace), params=params))[
            "items"
        ]
        return items or []  # an empty list may have "items": null

    async def count(
        self, api_version: str, kind: str, namespace: str | None, *, labels: dict[str, str]
    ) -> int:
        """How many objects match: a metadata-only list (the server gives no count for a
        label-selected list), a few hundred bytes an object instead of the whole object."""
        page = await self.request(
            "GET",
            path(api_version, kind, namespace),
            params={"labelSelector": _selector(labels)},
            headers={"Accept": METADATA_LIST},
        )
        return len(page.get("items") or [])

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
            return await self.request(
                "PATCH",
                path(api_version, kind, namespace, name, subresource),
                content=_dumps(body),
                headers={"Content-Type": content_type},
            )
        except ApiError as exc:
            if content_type == JSON_PATCH and exc.status == 422:
                raise Conflict(exc.status, exc.body) from exc
            raise

    async def delete_object(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """Delete; the answer is the object (still there while finalizers run) or a Status
        (gone at once). None if it did not exist."""
        try:
            return await self.request("DELETE", path(api_version, kind, namespace, name))
        except NotFound:
            return None

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete; False if it was already gone."""
        return await self.delete_object(api_version, kind, namespace, name) is not None

    async def watch_events(
        self, url: str, params: Mapping[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch request (``params`` holds ``watch=1`` and where to start)
        as the apiserver sends them, ``{"type": …, "object": …}``, until it ends the watch.
        Raises `ApiError` if it refuses the watch or the connection fails."""
        query = {k: str(v) for k, v in params.items()}
        try:
            async with self._session(watch=True).get(
                self.credentials.host + url, params=query, headers=await self.credentials.headers()
            ) as response:
                if response.status >= 400:
                    raise_for_status(response.status, (await response.read()).decode())
                # Split lines here: aiohttp's readline refuses lines over 128 KiB, and an
                # object in an event may be up to the apiserver's 1.5 MiB.
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield _loads(line)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, f"watch {url}: {type(exc).__name__}: {exc}") from exc

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        labels: dict[str, str] | None = None,
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Every object as ("ADDED", obj), then changes as they happen, forever: a list, then
        watches from the last resourceVersion seen. When history expired (410) it lists
        again; objects gone meanwhile come as "DELETED", the others as "ADDED" again. A list
        that fails raises `ApiError`; a watch that fails is made again."""
        url = path(api_version, kind, namespace)
        selector = _selector(labels)
        known: dict[str, dict[str, Any]] = {}
        while True:
            listed = await self.request("GET", url, params={"labelSelector": selector})
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
                    async with contextlib.aclosing(self.watch_events(url, params)) as events:
                        async for event in events:
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
                except ApiError as exc:
                    if exc.status:
                        version = ""  # refused: list again, after a breath
                    await asyncio.sleep(1)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(body: bytes) -> Any:
    return json.loads(body)
