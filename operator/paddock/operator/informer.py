"""Informers: an in-memory copy of one kind of object, kept current by a list and a watch.

The operator reads sandbox pods, Environments and Agents from here instead of asking the
apiserver on every event (what client-go calls an informer). One list+watch per kind (and
per watched namespace) replaces a list or get per handler call, and a server-side label
selector replaces kopf's client-side filter of every pod in the cluster.

The copy lags the apiserver by a watch event. Whoever writes an object stores the reply
(`store`), so its own writes are visible at once; decisions that must not race another
writer stay guarded by the apiserver (a claim tests the pod's resourceVersion).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from paddock.kube import ApiError, KubeClient, path

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
Indexer = Callable[[dict[str, Any]], Hashable | None]
OnChange = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]
PAGE = 500


def _version(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except ValueError:  # resourceVersions are opaque; etcd's are integers
        return 0


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


class Informer:
    """Objects of one kind (optionally label-selected) in the given namespaces (None: all).

    ``indexes`` name functions of an object whose result (if not None) it is found by with
    `by`; ``on_change(old, new)`` is called for every change (old None: added; new None:
    deleted), synchronously: it must not block. ``transform`` keeps only part of each
    object (what is read of it)."""

    def __init__(
        self,
        kube: KubeClient,
        api_version: str,
        kind: str,
        namespaces: Sequence[str] | None = None,
        *,
        labels: dict[str, str] | None = None,
        indexes: dict[str, Indexer] | None = None,
        on_change: OnChange | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.selector = ",".join(f"{k}={v}" for k, v in (labels or {}).items())
        self.objects: dict[Key, dict[str, Any]] = {}
        self.indexers = indexes or {}
        self._indexes: dict[str, dict[Hashable, set[Key]]] = {n: {} for n in self.indexers}
        self.on_change = on_change
        self.transform = transform
        self._synced = [asyncio.Event() for _ in self.namespaces]

    # --- reads ---------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))

    def by(self, index: str, value: Hashable) -> list[dict[str, Any]]:
        return [self.objects[k] for k in self._indexes[index].get(value, ())]

    def values(self) -> Iterable[dict[str, Any]]:
        return self.objects.values()

    @property
    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced)

    async def wait_synced(self) -> None:
        for event in self._synced:
            await event.wait()

    # --- writes --------------------------------------------------------------------

    def store(self, obj: dict[str, Any]) -> None:
        """Keep ``obj`` (a reply of the apiserver) unless a newer version is known."""
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        key = _key(obj)
        old = self.objects.get(key)
        if old is not None and _version(old) >= _version(obj) > 0:
            return
        obj["metadata"].pop("managedFields", None)  # most of an object's size; never read
        if self.transform is not None:
            obj = self.transform(obj)
        self._unindex(key, old)
        self.objects[key] = obj
        for name, indexer in self.indexers.items():
            value = indexer(obj)
            if value is not None:
                self._indexes[name].setdefault(value, set()).add(key)
        if self.on_change is not None:
            self.on_change(old, obj)

    def forget(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        old = self.objects.pop(key, None)
        if old is None:
            return
        self._unindex(key, old)
        if self.on_change is not None:
            self.on_change(old, None)

    def _unindex(self, key: Key, old: dict[str, Any] | None) -> None:
        if old is None:
            return
        for name, indexer in self.indexers.items():
            value = indexer(old)
            if value is not None:
                keys = self._indexes[name].get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._indexes[name][value]

    # --- the list and the watch ----------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(
            *(self._run(n, s) for n, s in zip(self.namespaces, self._synced, strict=True))
        )

    async def _run(self, namespace: str | None, synced: asyncio.Event) -> None:
        url = path(self.api_version, self.kind, namespace)
        while True:
            try:
                version = await self._list(url, namespace)
                synced.set()
                await self._watch(url, version)
            except asyncio.CancelledError:
                raise
            except (ApiError, OSError, ValueError, KeyError) as exc:
                log.warning("%s informer: %s; listing again", self.kind, exc)
                await asyncio.sleep(1)

    async def _list(self, url: str, namespace: str | None) -> str:
        seen: set[Key] = set()
        params: dict[str, Any] = {"limit": PAGE}
        if self.selector:
            params["labelSelector"] = self.selector
        while True:
            page = await self.kube.request("GET", url, params=params)
            for obj in page.get("items") or []:
                obj["apiVersion"], obj["kind"] = self.api_version, self.kind
                seen.add(_key(obj))
                self.store(obj)
            token = page["metadata"].get("continue")
            if not token:
                break
            params["continue"] = token
        for key in [k for k in self.objects if namespace in (None, k[0]) and k not in seen]:
            self.forget(self.objects[key])  # gone while we were not watching
        return str(page["metadata"]["resourceVersion"])

    async def _watch(self, url: str, version: str) -> None:
        """Watch from ``version`` until history expires (410) or the connection fails."""
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        if self.selector:
            params["labelSelector"] = self.selector
        while True:
            params["resourceVersion"] = version
            events = self.kube.watch_events(url, params)
            async with contextlib.aclosing(events):
                async for event in events:
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":  # 410 Gone: the history expired; list again
                        raise ApiError(obj.get("code", 410), obj.get("message", ""))
                    version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        self.forget(obj)
                    else:
                        self.store(obj)
