"""`/v1/agents`: Agent resources as Managed Agents agents. `version` is the Agent's
`metadata.generation`: it grows with every change of the spec; older versions are its
ControllerRevisions (paddock.kube.agentversions), up to its `revisionHistoryLimit`."""

from __future__ import annotations

import copy
import json
from typing import Any

from aiohttp import web

from paddock.eventlog import new_id
from paddock.gateway.common import checked, gateway, objects, read_body
from paddock.gateway.convert import meta
from paddock.gateway.convert.agents import (
    MULTIAGENT_ANNOTATION,
    agent_spec_fields,
    agent_view,
    version_object,
)
from paddock.gateway.errors import conflict, invalid, not_found, unsupported
from paddock.gateway.objects import AGENTS
from paddock.gateway.pages import bool_param, limit_param, paginate, time_filters
from paddock.gateway.params import AgentCreateParams, AgentUpdateParams
from paddock.gateway.views import AgentPage, respond
from paddock.models import AgentSpec

routes = web.RouteTableDef()

# Spec fields the API owns; everything else (credentials, harness, limits, ...) is kept.
_API_SPEC_FIELDS = ("model", "system", "description", "tools", "mcpServers")
_API_VIEW_FIELDS = {"name", "model", "description", "system", "tools", "mcp_servers"}


@routes.post("/v1/agents")
async def create_agent(request: web.Request) -> web.Response:
    params = await read_body(request, AgentCreateParams)
    secret = gateway(request).config.default_anthropic_secret
    spec = {
        **agent_spec_fields(params),
        "credentials": {"anthropicApiKey": secret.to_k8s()},
    }
    annotations = {meta.NAME_ANNOTATION: params.name}
    if params.multiagent is not None:
        spec["multiagent"], annotations[MULTIAGENT_ANNOTATION] = await roster(
            request, params.multiagent
        )
    checked(AgentSpec, spec)
    if params.metadata:
        annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(params.metadata)
    created = await objects(request).create(
        AGENTS, meta.object_name(params.name, "agent"), new_id("agent_"), spec, annotations
    )
    return respond(agent_view(created))


async def roster(request: web.Request, multiagent: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The spec's `multiagent` for the API's `{type: "coordinator", agents: [...]}` (agent
    ids, or `{type: "agent", id}`), and the API's form to show (ids and versions). 400 for a
    roster that is empty, over 20, repeats an Agent or names one that is itself a
    coordinator (depth 1); `self` and `advisor` entries and `multiagent_20261001` are not
    supported."""
    kind = multiagent.get("type")
    if kind != "coordinator":
        raise unsupported(f"multiagent type {kind!r}")
    entries = multiagent.get("agents")
    if not isinstance(entries, list) or not 1 <= len(entries) <= 20:
        raise invalid("multiagent.agents: a coordinator names 1 to 20 agents")
    names: list[dict[str, str]] = []
    shown: list[dict[str, Any]] = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("type") in ("self", "advisor"):
            raise unsupported(f"multiagent.agents: {entry['type']} entries")
        ref = entry.get("id") if isinstance(entry, dict) and entry.get("type") == "agent" else entry
        if not isinstance(ref, str):
            raise invalid("multiagent.agents: each entry is an agent id or {type: agent, id}")
        found = await objects(request).get(AGENTS, ref)
        if found is None:
            raise invalid(f"multiagent.agents: agent {ref} not found")
        if found["spec"].get("multiagent"):
            raise invalid(f"multiagent.agents: agent {ref} is itself a coordinator (depth 1)")
        name = found["metadata"]["name"]
        if {"name": name} in names:
            raise invalid(f"multiagent.agents: agent {ref} is named twice")
        names.append({"name": name})
        agent_id = meta.labels(found)[meta.AGENT_ID_LABEL]
        shown.append({"type": "agent", "id": agent_id, "version": agent_view(found).version})
    spec = {"type": "coordinator", "agents": names}
    return spec, json.dumps({"type": "coordinator", "agents": shown})


@routes.get("/v1/agents/{agent_id}")
async def retrieve_agent(request: web.Request) -> web.Response:
    ref = request.match_info["agent_id"]
    found = await objects(request).find(AGENTS, ref)
    wanted = request.query.get("version")
    if wanted is None:
        return respond(agent_view(found))
    if not wanted.isdigit() or int(wanted) < 1:
        raise invalid("version: must be a positive integer")
    version = await objects(request).agent_version(found, int(wanted))
    if version is None:
        raise not_found(version_missing(ref, int(wanted), found))
    return respond(agent_view(version_object(found, version)))


def version_missing(ref: str, version: int, agent: dict[str, Any]) -> str:
    current = agent_view(agent).version
    return (
        f"version {version} of agent {ref} not found: the agent is at version {current}, and "
        "older versions that no live session runs are kept up to its revisionHistoryLimit"
    )


@routes.get("/v1/agents/{agent_id}/versions")
async def list_agent_versions(request: web.Request) -> web.Response:
    """Every kept version, newest first (as the agents list), paginated by version."""
    found = await objects(request).find(AGENTS, request.match_info["agent_id"])
    limit = limit_param(request.query, default=20, maximum=100)
    versions = await objects(request).agent_versions(found)
    agent_id = meta.labels(found)[meta.AGENT_ID_LABEL]
    page = paginate(
        versions,
        lambda v: (f"{v.version:012d}", agent_id),
        limit=limit,
        order="desc",
        page=request.query.get("page"),
    )
    data = [agent_view(version_object(found, v)) for v in page.data]
    return respond(AgentPage(data=data, next_page=page.next_page))


@routes.get("/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    query = request.query
    limit = limit_param(query, default=20, maximum=100)
    archived = bool_param(query, "include_archived")
    tests = time_filters(query, ("gte", "lte"))
    items = []
    for obj in await objects(request).list(AGENTS):
        if meta.archived_at(obj) and not archived:
            continue
        if all(test(meta.parse_time(meta.created_at(obj))) for test in tests):
            items.append(obj)
    page = paginate(
        items,
        lambda obj: (meta.created_at(obj), meta.labels(obj)[meta.AGENT_ID_LABEL]),
        limit=limit,
        order="desc",
        page=query.get("page"),
    )
    return respond(AgentPage(data=[agent_view(obj) for obj in page.data], next_page=page.next_page))


@routes.post("/v1/agents/{agent_id}")
async def update_agent(request: web.Request) -> web.Response:
    ref = request.match_info["agent_id"]
    params = await read_body(request, AgentUpdateParams)
    given = params.model_fields_set - {"version", "metadata"}
    for required in ("name", "model"):
        if required in given and getattr(params, required) is None:
            raise invalid(f"{required}: cannot be cleared")

    multiagent: tuple[dict[str, Any], str] | None = None
    if "multiagent" in given and params.multiagent is not None:
        multiagent = await roster(request, params.multiagent)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        view = agent_view(current)
        if view.archived_at:
            raise conflict(f"agent {ref} is archived")
        if params.version is not None and params.version != view.version:
            raise conflict(f"agent {ref} is at version {view.version}, not {params.version}")
        # The resolved view of the stored agent, with the given fields replaced, is what
        # the agent becomes: validate it like a create.
        merged = view.model_dump(mode="json", include=_API_VIEW_FIELDS)
        merged.update(params.model_dump(include=given, mode="json", exclude_unset=True))
        fields = agent_spec_fields(AgentCreateParams.model_validate(merged))
        new = copy.deepcopy(current)
        spec = {k: v for k, v in new["spec"].items() if k not in _API_SPEC_FIELDS}
        new["spec"] = {**spec, **fields}
        annotations = new["metadata"].setdefault("annotations", {})
        if "multiagent" in given:
            new["spec"].pop("multiagent", None)
            annotations.pop(MULTIAGENT_ANNOTATION, None)
            if multiagent is not None:
                new["spec"]["multiagent"], annotations[MULTIAGENT_ANNOTATION] = multiagent
        checked(AgentSpec, new["spec"])
        if "name" in given:
            annotations[meta.NAME_ANNOTATION] = merged["name"]
        if params.metadata:
            metadata = meta.patched_metadata(meta.api_metadata(current), params.metadata)
            annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(metadata)
        if agent_view(new) == agent_view(current):
            return None  # a no-op creates no version
        annotations[meta.UPDATED_AT_ANNOTATION] = meta.rfc3339(meta.now())
        return new

    # The version this update supersedes stays available (the operator may not have seen it).
    await objects(request).record_agent_version(await objects(request).find(AGENTS, ref))
    updated = await objects(request).update(AGENTS, ref, change)
    return respond(agent_view(updated))


@routes.post("/v1/agents/{agent_id}/archive")
async def archive_agent(request: web.Request) -> web.Response:
    archived = await objects(request).update(
        AGENTS, request.match_info["agent_id"], meta.archived_copy
    )
    return respond(agent_view(archived))
