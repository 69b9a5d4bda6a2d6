"""`/v1/sessions/{session_id}/resources`: what a session mounts, while it runs.

A resource is an item of the Session's `spec.resources`; its id is made from its mount path
(`convert.sessions.resource_id`), one resource per path. Adding or deleting one rewrites
the resource and then the session's settings in Redis, which the harness reads before each
tool call: an added file or repository is in the sandbox before the next call. Deleting a
resource does not remove what a sandbox has already mounted (docs/gateway.md, "Files").
"""

from __future__ import annotations

import copy
import json
from typing import Any

from aiohttp import web

from paddock.gateway.common import checked, gateway, objects, read_body
from paddock.gateway.convert import meta
from paddock.gateway.convert.sessions import (
    RESOURCE_TIMES_ANNOTATION,
    mount_path,
    resource_id,
    resource_spec,
    resources_view,
)
from paddock.gateway.errors import conflict, invalid, not_found, unsupported
from paddock.gateway.mounts import check_files, refresh_settings
from paddock.gateway.objects import SESSIONS
from paddock.gateway.pages import limit_param, paginate
from paddock.gateway.params import (
    ResourceAddParams,
    ResourceUpdateParams,
)
from paddock.gateway.sessions import session_id_of, snapshot_or_none
from paddock.gateway.views import (
    SessionResource,
    SessionResourceDeleted,
    SessionResourcePage,
    respond,
)
from paddock.models import Session, SessionSpec
from paddock.models import SessionResource as SpecResource

routes = web.RouteTableDef()


async def _running(request: web.Request) -> dict[str, Any]:
    """The Session of the route; 409 once it is terminated."""
    gw, found = gateway(request), objects(request)
    obj = await found.find(SESSIONS, request.match_info["session_id"])
    snapshot = await snapshot_or_none(gw, found.namespace, session_id_of(obj))
    if (snapshot is not None and snapshot.status == "terminated") or meta.archived_at(obj):
        raise conflict(f"session {request.match_info['session_id']} is terminated")
    return obj


def _views(obj: dict[str, Any]) -> list[SessionResource]:
    return resources_view(obj, SessionSpec.model_validate(obj["spec"]))


def _find(obj: dict[str, Any], ref: str) -> SessionResource:
    for view in _views(obj):
        if view.id == ref:
            return view
    raise not_found(
        f"resource {ref} not found in session {session_id_of(obj)}",
        error_code="session_resource_not_found",
    )


async def _rewrite(request: web.Request, change: Any) -> dict[str, Any]:
    """Apply ``change`` to the Session's spec and annotations, then its settings."""
    gw, found = gateway(request), objects(request)
    updated = await found.update(SESSIONS, request.match_info["session_id"], change)
    session = Session.model_validate(updated)
    await refresh_settings(gw, found.namespace, session_id_of(updated), session)
    return updated


@routes.post("/v1/sessions/{session_id}/resources")
async def add_resource(request: web.Request) -> web.Response:
    params = (await read_body(request, ResourceAddParams)).root
    await _running(request)
    await check_files(gateway(request), objects(request).namespace, [params])
    item = checked(SpecResource, resource_spec(params))
    key = resource_id(item)
    stamp = meta.rfc3339(meta.now())

    def change(current: dict[str, Any]) -> dict[str, Any]:
        new = copy.deepcopy(current)
        resources = new["spec"].setdefault("resources", [])
        if any(resource_id(SpecResource.model_validate(r)) == key for r in resources):
            raise conflict(f"a resource is mounted at {mount_path(item)} already")
        resources.append(item.model_dump(by_alias=True, exclude_none=True))
        checked(SessionSpec, new["spec"])
        annotations = new["metadata"].setdefault("annotations", {})
        added = json.loads(annotations.get(RESOURCE_TIMES_ANNOTATION) or "{}")
        added[key] = stamp
        annotations[RESOURCE_TIMES_ANNOTATION] = json.dumps(added, separators=(",", ":"))
        annotations[meta.UPDATED_AT_ANNOTATION] = stamp
        return new

    updated = await _rewrite(request, change)
    return respond(_find(updated, key))


@routes.get("/v1/sessions/{session_id}/resources")
async def list_resources(request: web.Request) -> web.Response:
    query = request.query
    obj = await objects(request).find(SESSIONS, request.match_info["session_id"])
    items = _views(obj)
    limit = limit_param(query, default=max(len(items), 1), maximum=1000)
    page = paginate(
        items, lambda v: (v.created_at, v.id), limit=limit, order="asc", page=query.get("page")
    )
    return respond(SessionResourcePage(data=page.data, next_page=page.next_page))


@routes.get("/v1/sessions/{session_id}/resources/{resource_id}")
async def retrieve_resource(request: web.Request) -> web.Response:
    obj = await objects(request).find(SESSIONS, request.match_info["session_id"])
    return respond(_find(obj, request.match_info["resource_id"]))


@routes.post("/v1/sessions/{session_id}/resources/{resource_id}")
async def update_resource(request: web.Request) -> web.Response:
    await read_body(request, ResourceUpdateParams)
    obj = await objects(request).find(SESSIONS, request.match_info["session_id"])
    found = _find(obj, request.match_info["resource_id"])
    if found.type != "github_repository":
        raise invalid("only github_repository resources have an authorization_token")
    raise unsupported(
        "authorization_token",
        "the credential proxy adds the token of the Agent's credentials.hosts: "
        "rotate it in the Agent's Secret",
    )


@routes.delete("/v1/sessions/{session_id}/resources/{resource_id}")
async def delete_resource(request: web.Request) -> web.Response:
    ref = request.match_info["resource_id"]
    _find(await _running(request), ref)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        new = copy.deepcopy(current)
        spec = new["spec"]
        kept = [
            r
            for r in spec.get("resources", [])
            if resource_id(SpecResource.model_validate(r)) != ref
        ]
        if len(kept) == len(spec.get("resources", [])):
            return None  # deleted meanwhile
        spec["resources"] = kept
        annotations = new["metadata"].setdefault("annotations", {})
        annotations[meta.UPDATED_AT_ANNOTATION] = meta.rfc3339(meta.now())
        return new

    await _rewrite(request, change)
    return respond(SessionResourceDeleted(id=ref))
