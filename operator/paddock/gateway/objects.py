"""Finding, listing and writing the custom resources behind API objects, in one namespace.

An object is visible to the API only once it carries its id label: the gateway sets it on
what it creates, the operator adds it to objects created with kubectl. Objects being
deleted are invisible too. Every lookup is scoped to the caller's namespace, so an id of
another namespace is simply not found.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from paddock.gateway.convert.meta import (
    AGENT_ID_LABEL,
    ENVIRONMENT_ID_LABEL,
    SESSION_ID_LABEL,
    VAULT_ID_LABEL,
    labels,
    session_object_name,
)
from paddock.gateway.errors import ApiError, conflict, invalid, not_found, unavailable
from paddock.kube import (
    MERGE,
    AgentVersion,
    Conflict,
    KubeClient,
    NotFound,
    find_version,
    list_versions,
    path,
    pin_version,
    record_current,
)
from paddock.kube import ApiError as KubeApiError
from paddock.models import API_VERSION, OBJECT_NAME_PATTERN

_NAME = re.compile(OBJECT_NAME_PATTERN)
_CONFLICT_RETRIES = 5
METADATA_ONLY = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    label: str
    prefix: str
    noun: str

    def is_id(self, ref: str) -> bool:
        # Checked before it goes into a label selector.
        return re.fullmatch(rf"{self.prefix}[0-9A-Za-z]{{1,56}}", ref) is not None


AGENTS = Kind("Agent", "agents", AGENT_ID_LABEL, "agent_", "agent")
ENVIRONMENTS = Kind("Environment", "environments", ENVIRONMENT_ID_LABEL, "env_", "environment")
SESSIONS = Kind("Session", "sessions", SESSION_ID_LABEL, "sesn_", "session")
VAULTS = Kind("Vault", "vaults", VAULT_ID_LABEL, "vlt_", "vault")


def visible(obj: dict[str, Any], kind: Kind) -> bool:
    return kind.label in labels(obj) and not obj["metadata"].get("deletionTimestamp")


def kube_error(exc: KubeApiError) -> ApiError:
    """The API answer for an apiserver failure: its validation errors are the caller's."""
    if exc.status in (400, 422):
        return invalid(exc.message)
    if exc.status == 409:
        return conflict(exc.message)
    if exc.status == 413:
        return ApiError(413, exc.message)
    return unavailable(f"the Kubernetes API failed: {exc.reason}")


class Objects:
    """Paddock resources of one namespace, addressed by API id or Kubernetes name."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def _call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except KubeApiError as exc:
            raise kube_error(exc) from exc

    async def find(self, kind: Kind, ref: str) -> dict[str, Any]:
        """The object with id ``ref``, or (a Paddock extension) Kubernetes name ``ref``;
        404 if there is none visible."""
        found = await self.get(kind, ref)
        if found is None:
            raise not_found(f"{kind.noun} {ref} not found")
        return found

    async def get(self, kind: Kind, ref: str) -> dict[str, Any] | None:
        candidates: list[dict[str, Any]] = []
        if kind.is_id(ref):
            if kind is SESSIONS:
                # Sessions the API created are named after their id: one GET, no list.
                obj = await self._call(
                    self.kube.find(API_VERSION, kind.kind, self.namespace, session_object_name(ref))
                )
                candidates = [obj] if obj else []
            if not any(labels(c).get(kind.label) == ref for c in candidates):
                candidates = await self._call(
                    self.kube.list(
                        API_VERSION, kind.kind, self.namespace, selector=f"{kind.label}={ref}"
                    )
                )
            candidates = [c for c in candidates if labels(c).get(kind.label) == ref]
        elif _NAME.fullmatch(ref) and len(ref) <= 253:
            obj = await self._call(self.kube.find(API_VERSION, kind.kind, self.namespace, ref))
            candidates = [obj] if obj else []
        visible_ones = [c for c in candidates if visible(c, kind)]
        return visible_ones[0] if visible_ones else None

    async def get_by_name(self, kind: Kind, name: str) -> dict[str, Any] | None:
        """The visible object named ``name``, or None."""
        obj = await self._call(self.kube.find(API_VERSION, kind.kind, self.namespace, name))
        return obj if obj and visible(obj, kind) else None

    async def list(self, kind: Kind) -> list[dict[str, Any]]:
        """Every visible object of ``kind`` in the namespace."""
        items = await self._call(
            self.kube.list(API_VERSION, kind.kind, self.namespace, selector=kind.label)
        )
        return [item for item in items if visible(item, kind)]

    async def create(
        self,
        kind: Kind,
        name: str,
        object_id: str,
        spec: dict[str, Any],
        annotations: dict[str, str],
    ) -> dict[str, Any]:
        body = {
            "apiVersion": API_VERSION,
            "kind": kind.kind,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {kind.label: object_id},
                "annotations": annotations,
            },
            "spec": spec,
        }
        result: dict[str, Any] = await self._call(self.kube.create(body, field_validation="Strict"))
        return result

    async def update(
        self,
        kind: Kind,
        ref: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
    ) -> dict[str, Any]:
        """Read-modify-write of the object ``ref``: ``change`` gets a fresh copy and returns
        the new object (None: nothing to write). Retried when another writer got in between."""
        for _ in range(_CONFLICT_RETRIES):
            current = await self.find(kind, ref)
            new = change(current)
            if new is None:
                return current
            try:
                return await self.kube.replace(new, field_validation="Strict")
            except Conflict:
                pass
            except KubeApiError as exc:
                raise kube_error(exc) from exc
        raise conflict(f"{kind.noun} {ref} is being changed concurrently; try again")

    async def delete(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Delete ``obj``; the apiserver's answer (see ``KubeClient.delete_object``)."""
        result: dict[str, Any] | None = await self._call(
            self.kube.delete_object(API_VERSION, kind.kind, self.namespace, obj["metadata"]["name"])
        )
        return result

    # Secrets holding vault credentials: written and deleted, never read. The apiserver
    # answers a write with the object, values and all, unless asked for its metadata only:
    # so every write asks for that (docs/security-model.md).

    async def create_secret(self, body: dict[str, Any]) -> None:
        secret = {**body, "apiVersion": "v1", "kind": "Secret"}
        url = path("v1", "Secret", self.namespace)
        await self._call(self.kube.request("POST", url, json=secret, headers=METADATA_ONLY))

    async def patch_secret(self, name: str, string_data: dict[str, str]) -> None:
        """Set keys of a Secret."""
        url = path("v1", "Secret", self.namespace, name)
        body = json.dumps({"stringData": string_data})
        headers = {**METADATA_ONLY, "Content-Type": MERGE}
        await self._call(self.kube.request("PATCH", url, content=body, headers=headers))

    async def delete_secret(self, name: str) -> None:
        url = path("v1", "Secret", self.namespace, name)
        try:
            await self.kube.request("DELETE", url, headers=METADATA_ONLY)
        except NotFound:
            pass  # gone already: what was asked
        except KubeApiError as exc:
            raise kube_error(exc) from exc

    # Agent versions (paddock.kube.agentversions): ControllerRevisions of the Agent.

    async def agent_version(self, agent: dict[str, Any], version: int) -> AgentVersion | None:
        """Version ``version`` of ``agent``; None if it was pruned or is not made yet."""
        found: AgentVersion | None = await self._call(find_version(self.kube, agent, version))
        return found

    async def agent_versions(self, agent: dict[str, Any]) -> builtins.list[AgentVersion]:
        """The kept versions of ``agent``, oldest first."""
        found: builtins.list[AgentVersion] = await self._call(list_versions(self.kube, agent))
        return found

    async def pin_agent_version(
        self, agent: dict[str, Any], version: int | None
    ) -> AgentVersion | None:
        """The version of ``agent`` a new session runs (`paddock.kube.pin_version`)."""
        found: AgentVersion | None = await self._call(pin_version(self.kube, agent, version))
        return found

    async def record_agent_version(self, agent: dict[str, Any]) -> None:
        """Record ``agent``'s current version (if no writer has) before an update supersedes
        it."""
        await self._call(record_current(self.kube, agent))
