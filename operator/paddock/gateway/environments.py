"""`/v1/environments`: Environment resources as Managed Agents environments.

Only `cloud` configs exist here (Paddock runs the sandboxes); networking maps to the
Environment's `networking.mode`, packages to `packages`. Image, resources and the warm pool
keep the Environment's defaults, or whatever a platform team set with kubectl.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from paddock.eventlog import new_id
from paddock.gateway.common import checked, objects, read_body
from paddock.gateway.convert import meta
from paddock.gateway.convert.environments import environment_spec, environment_view
from paddock.gateway.errors import conflict, unsupported
from paddock.gateway.objects import ENVIRONMENTS, Objects
from paddock.gateway.pages import bool_param, limit_param, paginate
from paddock.gateway.params import EnvironmentCreateParams, EnvironmentUpdateParams, Scope
from paddock.gateway.views import EnvironmentDeleted, EnvironmentPage, respond
from paddock.models import EnvironmentSpec

routes = web.RouteTableDef()


def _check_scope(scope: Scope | None) -> None:
    if scope == "account":
        raise unsupported("scope account", "environments are visible to the whole namespace")


async def _check_name_free(found: Objects, name: str, *, other_than: str | None = None) -> None:
    """409 if an environment that is not archived has ``name``: archiving frees a name, so
    client code that archives its environment and makes it again runs twice (the archived
    one keeps its own Kubernetes name, which has a random suffix)."""
    # Checked before writing: two concurrent creates with one name can both succeed.
    for obj in await found.list(ENVIRONMENTS):
        if (
            meta.display_name(obj) == name
            and not meta.archived_at(obj)
            and obj["metadata"]["name"] != other_than
        ):
            raise conflict(f"an environment named {name!r} exists already")


@routes.post("/v1/environments")
async def create_environment(request: web.Request) -> web.Response:
    params = await read_body(request, EnvironmentCreateParams)
    _check_scope(params.scope)
    spec = environment_spec(params.config, {})
    checked(EnvironmentSpec, spec)
    found = objects(request)
    await _check_name_free(found, params.name)
    annotations = {meta.NAME_ANNOTATION: params.name}
    if params.description:
        annotations[meta.DESCRIPTION_ANNOTATION] = params.description
    if params.metadata:
        annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(params.metadata)
    created = await found.create(
        ENVIRONMENTS, meta.object_name(params.name, "env"), new_id("env_"), spec, annotations
    )
    return respond(environment_view(created))


@routes.get("/v1/environments/{environment_id}")
async def retrieve_environment(request: web.Request) -> web.Response:
    found = await objects(request).find(ENVIRONMENTS, request.match_info["environment_id"])
    return respond(environment_view(found))


@routes.get("/v1/environments")
async def list_environments(request: web.Request) -> web.Response:
    query = request.query
    limit = limit_param(query, default=20, maximum=100)
    archived = bool_param(query, "include_archived")
    items = [
        obj
        for obj in await objects(request).list(ENVIRONMENTS)
        if archived or not meta.archived_at(obj)
    ]
    page = paginate(
        items,
        lambda obj: (meta.created_at(obj), meta.labels(obj)[meta.ENVIRONMENT_ID_LABEL]),
        limit=limit,
        order="desc",
        page=query.get("page"),
    )
    return respond(
        EnvironmentPage(data=[environment_view(obj) for obj in page.data], next_page=page.next_page)
    )


@routes.post("/v1/environments/{environment_id}")
async def update_environment(request: web.Request) -> web.Response:
    ref = request.match_info["environment_id"]
    params = await read_body(request, EnvironmentUpdateParams)
    _check_scope(params.scope)
    found = objects(request)
    if params.name is not None:
        current = await found.find(ENVIRONMENTS, ref)
        await _check_name_free(found, params.name, other_than=current["metadata"]["name"])

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        if meta.archived_at(current):
            raise conflict(f"environment {ref} is archived")
        new = copy.deepcopy(current)
        new["spec"] = environment_spec(params.config, current.get("spec") or {})
        checked(EnvironmentSpec, new["spec"])
        annotations = new["metadata"].setdefault("annotations", {})
        if params.name is not None:
            annotations[meta.NAME_ANNOTATION] = params.name
        if "description" in params.model_fields_set:
            if params.description is None:
                annotations.pop(meta.DESCRIPTION_ANNOTATION, None)
            else:
                annotations[meta.DESCRIPTION_ANNOTATION] = params.description
        if params.metadata:
            metadata = meta.patched_metadata(
                meta.api_metadata(current), params.metadata, empty_deletes=True
            )
            annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(metadata)
        if new == current:
            return None
        annotations[meta.UPDATED_AT_ANNOTATION] = meta.rfc3339(meta.now())
        return new

    updated = await found.update(ENVIRONMENTS, ref, change)
    return respond(environment_view(updated))


@routes.delete("/v1/environments/{environment_id}")
async def delete_environment(request: web.Request) -> web.Response:
    found = objects(request)
    obj = await found.find(ENVIRONMENTS, request.match_info["environment_id"])
    await found.delete(ENVIRONMENTS, obj)
    environment_id = meta.labels(obj)[meta.ENVIRONMENT_ID_LABEL]
    return respond(EnvironmentDeleted(id=environment_id))


@routes.post("/v1/environments/{environment_id}/archive")
async def archive_environment(request: web.Request) -> web.Response:
    archived = await objects(request).update(
        ENVIRONMENTS, request.match_info["environment_id"], meta.archived_copy
    )
    return respond(environment_view(archived))
