"""Who a caller is: a Paddock API key, or a Kubernetes identity.

API keys are Kubernetes Secrets in the gateway's namespace, each granting one namespace.

A key Secret is labelled ``paddock.dev/api-key: "true"`` and holds ``api-key`` (the key)
and ``namespace`` (the tenant namespace the key grants). Keys are cached and re-listed
after ``ttl_s``; an unknown key triggers an early re-list at most every ``miss_interval_s``,
so a new key works within a second while a flood of wrong keys costs the apiserver
one list a second.

Kubernetes identities are bearer tokens the apiserver vouches for (TokenReview), allowed by
the RBAC that applies to the resource the request touches (SubjectAccessReview), so that a
platform team's Roles decide who may read or drive a Session (docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from paddock.kube import ApiError, KubeClient

API_KEY_LABEL = "paddock.dev/api-key"
GROUP = "paddock.dev"
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

    async def namespace_for(self, key: str, *, refresh_on_miss: bool = True) -> str | None:
        """The namespace ``key`` grants, or None if no Secret holds it; an unknown key
        re-lists the Secrets (at most every ``miss_interval_s``) unless not ``refresh_on_miss``.

        Raises `paddock.kube.ApiError` only if the keys could never be listed.
        """
        now = time.monotonic()
        if self._loaded_at is None or now - self._loaded_at > self.ttl_s:
            await self._reload(max_age=self.ttl_s)
        found = self._match(key)
        if found is None and refresh_on_miss:
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


# --- Kubernetes identities -------------------------------------------------------------------

RESOURCES = frozenset({"agents", "environments", "sessions", "vaults"})
"""What the API's routes are made of: resources of group ``paddock.dev``."""
_GUARDED_AS = {"files": "sessions"}
"""Routes that are no resource of their own: the Files API serves sessions (their inputs
and outputs), so RBAC on sessions decides it."""
_NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Access:
    """What a request needs: ``verb`` on ``resource`` (in group paddock.dev)."""

    resource: str
    verb: str


def required_access(method: str, route: str) -> Access | None:
    """The access a request of ``method`` on the route template ``route`` needs, or None for
    a route outside the API's resources.

    Reads are ``list`` (a collection, and `/v1/console/<resources>`) or ``get`` (an object,
    its events, its stream); writes are ``create`` (a collection), ``update`` (an object, its
    archive, sending its events) and ``delete``: the verbs RBAC already uses for these
    resources.
    """
    parts = route.strip("/").split("/")
    if parts[:2] == ["v1", "console"] and len(parts) == 3:
        # The console's status of a collection (gateway/console.py) is a read of it.
        parts = ["v1", parts[2]]
    if len(parts) >= 2:
        parts[1] = _GUARDED_AS.get(parts[1], parts[1])
    if len(parts) < 2 or parts[0] != "v1" or parts[1] not in RESOURCES:
        return None
    collection = len(parts) == 2
    if method in ("GET", "HEAD"):
        verb = "list" if collection else "get"
    elif method == "POST":
        verb = "create" if collection else "update"
    elif method == "DELETE" and not collection:
        verb = "delete"
    else:
        return None
    return Access(parts[1], verb)


def valid_namespace(name: str) -> bool:
    return _NAMESPACE_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class User:
    """A user the apiserver authenticated (TokenReview ``status.user``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: dict[str, Any]) -> User:
        extra = user.get("extra") or {}
        return cls(
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(str(group) for group in user.get("groups") or ()),
            extra=tuple(sorted((str(k), tuple(str(v) for v in vs)) for k, vs in extra.items())),
        )


_V = TypeVar("_V")


class ReviewCache(Generic[_V]):
    """Answers of the apiserver, kept ``ttl_s`` (``negative_ttl_s`` for a refusal: None or
    False), at most ``size`` of them (the least recently used go first). Concurrent lookups
    of one key share one review. A review that raises (the apiserver failed) is not kept."""

    def __init__(self, *, ttl_s: float, negative_ttl_s: float, size: int) -> None:
        self.ttl_s, self.negative_ttl_s, self.size = ttl_s, negative_ttl_s, size
        self._entries: OrderedDict[Hashable, tuple[float, _V]] = OrderedDict()
        self._inflight: dict[Hashable, asyncio.Future[_V]] = {}
        self.reviews = 0
        """Reviews sent, for tests and figures."""

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: Hashable, review: Callable[[], Awaitable[_V]]) -> _V:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None:
            expires, value = entry
            if now < expires:
                self._entries.move_to_end(key)
                return value
            del self._entries[key]
        pending = self._inflight.get(key)
        if pending is not None:
            # shield: one waiter cancelled (its client left) does not cancel the others'.
            return await asyncio.shield(pending)
        future: asyncio.Future[_V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self.reviews += 1
            value = await review()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]
        future.set_result(value)
        ttl = self.ttl_s if value not in (None, False) else self.negative_ttl_s
        self._entries[key] = (time.monotonic() + ttl, value)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


class KubernetesAuth:
    """Kubernetes bearer tokens: who it is (TokenReview), and whether they may (a
    SubjectAccessReview of the verb and resource in the namespace). Both answers are cached
    briefly; an apiserver failure raises `paddock.kube.ApiError` and is never cached."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        audiences: tuple[str, ...] = (),
        ttl_s: float = 10.0,
        negative_ttl_s: float = 5.0,
        size: int = 4096,
    ) -> None:
        self.kube = kube
        self.audiences = audiences
        self.tokens: ReviewCache[User | None] = ReviewCache(
            ttl_s=ttl_s, negative_ttl_s=negative_ttl_s, size=size
        )
        self.access: ReviewCache[bool] = ReviewCache(
            ttl_s=ttl_s, negative_ttl_s=negative_ttl_s, size=size
        )

    async def user(self, token: str) -> User | None:
        """The user ``token`` authenticates, or None if the apiserver does not accept it."""
        return await self.tokens.get(_digest(token), lambda: self._review_token(token))

    async def allowed(self, user: User, namespace: str, access: Access) -> bool:
        key = (user, namespace, access)
        return await self.access.get(key, lambda: self._review_access(user, namespace, access))

    async def _review_token(self, token: str) -> User | None:
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        review = await self.kube.request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return None
        if self.audiences and not set(status.get("audiences") or ()) & set(self.audiences):
            return None  # the apiserver does not check audiences for every authenticator
        user = User.from_review(status.get("user") or {})
        return user if user.username else None

    async def _review_access(self, user: User, namespace: str, access: Access) -> bool:
        spec: dict[str, Any] = {
            "user": user.username,
            "groups": list(user.groups),
            "resourceAttributes": {
                "namespace": namespace,
                "group": GROUP,
                "resource": access.resource,
                "verb": access.verb,
            },
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {key: list(values) for key, values in user.extra}
        review = await self.kube.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json={
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": spec,
            },
        )
        return bool((review.get("status") or {}).get("allowed"))
