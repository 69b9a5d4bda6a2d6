"""Immutable snapshots of an object's spec as `apps/v1` ControllerRevisions, as a
StatefulSet keeps its history: one revision per version, named `<owner>-v<revision>`,
owned by the object (deleted with it by the garbage collector), labelled for listing.

Several writers may record the same revision (the operator on each generation it sees, the
gateway when it pins a session to one): a revision is created if absent and never changed,
so any writer's copy is the same. One whose owner is another object of the same name (a
deleted and re-created one, before the garbage collector came) is not this object's."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
from typing import Any

from paddock.kube.client import Conflict, KubeClient

API_VERSION = "apps/v1"
KIND = "ControllerRevision"


def revision_name(owner_name: str, revision: int) -> str:
    return f"{owner_name}-v{revision}"


def controller_revision(
    owner: dict[str, Any], revision: int, data: dict[str, Any], labels: dict[str, str]
) -> dict[str, Any]:
    """The revision ``revision`` of ``owner`` (a whole object as the apiserver returns it)."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": revision_name(meta["name"], revision),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
        "revision": revision,
        "data": data,
    }


def owned_by(revision: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in revision["metadata"].get("ownerReferences") or [])


def revisions_to_prune(
    revisions: Iterable[int], *, limit: int, in_use: Collection[int]
) -> list[int]:
    """The revisions to delete: all but the newest ``limit``, except those ``in_use``."""
    newest_first = sorted(set(revisions), reverse=True)
    return sorted(r for r in newest_first[limit:] if r not in in_use)


async def record_revision(kube: KubeClient, body: dict[str, Any], owner: dict[str, Any]) -> None:
    """Create the revision ``body`` of ``owner`` unless it exists (a stale one, of an earlier
    owner of the same name, is replaced). Every new session pins its Agent's current
    version: once this client knows the revision exists, it neither writes nor reads it
    again (a create answered 409 is a write, and the check a read)."""
    meta = body["metadata"]
    known = (owner["metadata"]["uid"], meta["name"])
    if known in kube.known_revisions:
        return
    try:
        await kube.create(body)
    except Conflict:
        found = await kube.find(API_VERSION, KIND, meta["namespace"], meta["name"])
        if found is None:
            return  # pruned meanwhile (it was not in use)
        if not owned_by(found, owner):
            await kube.delete(API_VERSION, KIND, meta["namespace"], meta["name"])
            with contextlib.suppress(Conflict):  # another writer replaced it: the same content
                await kube.create(body)
    kube.known_revisions.add(known)


async def find_revision(
    kube: KubeClient, owner: dict[str, Any], revision: int
) -> dict[str, Any] | None:
    meta = owner["metadata"]
    found = await kube.find(
        API_VERSION, KIND, meta["namespace"], revision_name(meta["name"], revision)
    )
    return found if found is not None and owned_by(found, owner) else None


async def list_revisions(
    kube: KubeClient, owner: dict[str, Any], labels: dict[str, str]
) -> list[dict[str, Any]]:
    """The revisions of ``owner`` (selected by ``labels``), oldest first."""
    found = await kube.list(API_VERSION, KIND, owner["metadata"]["namespace"], labels=labels)
    return sorted((r for r in found if owned_by(r, owner)), key=lambda r: int(r["revision"]))


async def delete_revision(kube: KubeClient, owner: dict[str, Any], revision: int) -> None:
    meta = owner["metadata"]
    name = revision_name(meta["name"], revision)
    kube.known_revisions.discard((meta["uid"], name))
    await kube.delete(API_VERSION, KIND, meta["namespace"], name)
