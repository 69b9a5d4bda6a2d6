"""`/v1/sessions`: Session resources as Managed Agents sessions.

Creating one starts its log in Redis (`open_session`), then writes the Session resource:
the session takes events at once, and the resource never exists without its log. The
gateway is the one writer that starts the sessions it creates; the operator starts only
Sessions applied without it (kubectl, GitOps), which have no log when it first sees them.
Status and usage come from the log; title, metadata and resources from the resource.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from datetime import datetime
from typing import Any, get_args

from aiohttp import web
from redis.exceptions import RedisError

from paddock.eventlog import (
    AgentPin,
    EventLog,
    SessionNotFound,
    SessionSnapshot,
    SessionState,
    new_session_id,
    open_session,
)
from paddock.gateway import mounts, views
from paddock.gateway.agents import version_missing
from paddock.gateway.common import Gateway, checked, gateway, objects, read_body
from paddock.gateway.convert import meta
from paddock.gateway.convert.agents import session_agent_view, version_object
from paddock.gateway.convert.sessions import session_spec, session_status, session_view
from paddock.gateway.errors import conflict, invalid, not_found, unavailable, unsupported
from paddock.gateway.objects import AGENTS, ENVIRONMENTS, SESSIONS, VAULTS, Objects
from paddock.gateway.outcomes import check_one_outcome, session_outcomes, with_text_rubric
from paddock.gateway.pages import (
    bool_param,
    limit_param,
    list_param,
    order_param,
    paginate,
    time_filters,
)
from paddock.gateway.params import (
    AgentRefParam,
    DefineOutcomeParam,
    SessionCreateParams,
    SessionUpdateParams,
)
from paddock.gateway.views import SessionDeleted, SessionPage, respond
from paddock.kube import AgentVersion, generation
from paddock.models import AgentSpec, Session, SessionSpec, environment_name

routes = web.RouteTableDef()
_STATUSES = get_args(views.SessionStatus)
_NO_SESSIONS = SessionPage(data=[], next_page=None, prev_page=None)


def session_id_of(obj: dict[str, Any]) -> str:
    return meta.labels(obj)[meta.SESSION_ID_LABEL]


async def snapshot_or_none(gw: Gateway, namespace: str, session_id: str) -> SessionSnapshot | None:
    """The log's snapshot; None before the log exists (the operator has not started it)."""
    try:
        return await gw.log.tenant(namespace).snapshot(session_id)
    except SessionNotFound:
        return None
    except RedisError as exc:
        raise unavailable("the event log is unavailable") from exc


def _environment_name(session: dict[str, Any], agent: dict[str, Any] | None) -> str | None:
    """The Environment a session shows: its own, else its Agent's (as `environment_name`
    resolves it, without validating every listed object)."""
    ref = session["spec"].get("environmentRef") or (agent or {}).get("spec", {}).get(
        "environmentRef"
    )
    return ref["name"] if ref else None


def pinned_version(session: dict[str, Any]) -> int | None:
    """The Agent version a Session runs: the one it names (the gateway always names it),
    else the one the operator pinned when it accepted it; None before that."""
    version = session["spec"]["agentRef"].get("version") or (session.get("status") or {}).get(
        "agentVersion"
    )
    return int(version) if version else None


class _Resolver:
    """Agents (at the versions sessions run) and environments of one namespace by Kubernetes
    name, each read once. ``state``: where a session's pin is read when its version's
    revision is pruned (a terminated session's may be)."""

    def __init__(
        self,
        found: Objects,
        agents: list[dict[str, Any]] | None = None,
        state: SessionState | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.found = found
        self.log = log
        """Where `outcome_evaluations[]` are read (None: shown empty)."""
        self.agents = {a["metadata"]["name"]: a for a in agents} if agents is not None else None
        self.environments: dict[str, dict[str, Any] | None] = {}
        self.state = state
        self.versions: dict[tuple[str, int], AgentVersion | None] = {}

    async def at_version(self, agent: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
        """``agent`` as ``session`` runs it."""
        version = pinned_version(session)
        if version is None or version == generation(agent):
            return agent
        key = (agent["metadata"]["name"], version)
        if key not in self.versions:
            self.versions[key] = await self.found.agent_version(agent, version)
        found = self.versions[key]
        if found is None and self.state is not None:
            with contextlib.suppress(RedisError):
                settings = await self.state.settings(session_id_of(session))
                if settings is not None and settings.agent is not None:
                    pin = settings.agent
                    found = AgentVersion(pin.version, pin.spec.to_k8s(), None)
        return version_object(agent, found) if found is not None else agent

    async def agent(self, name: str) -> dict[str, Any] | None:
        if self.agents is not None:
            return self.agents.get(name)
        return await self.found.get_by_name(AGENTS, name)

    async def environment_id(self, name: str | None) -> str | None:
        if name is None:
            return None
        if name not in self.environments:
            self.environments[name] = await self.found.get_by_name(ENVIRONMENTS, name)
        environment = self.environments[name]
        return meta.labels(environment)[meta.ENVIRONMENT_ID_LABEL] if environment else None

    async def view(
        self, obj: dict[str, Any], snapshot: SessionSnapshot | None, at: datetime
    ) -> views.Session:
        agent_name = obj["spec"]["agentRef"]["name"]
        agent = await self.agent(agent_name)
        environment_id = await self.environment_id(_environment_name(obj, agent))
        shown = await self.at_version(agent, obj) if agent is not None else None
        outcomes: list[views.OutcomeEvaluation] = []
        # Only a log that ever had an outcome is scanned (the snapshot knows): a list of
        # sessions costs no log reads for the others.
        if snapshot is not None and snapshot.has_outcome and self.log is not None:
            with contextlib.suppress(RedisError, SessionNotFound):
                outcomes = await session_outcomes(self.log, snapshot.session_id)
        return session_view(
            obj, session_agent_view(shown, agent_name), environment_id, snapshot, at, outcomes
        )


@routes.post("/v1/sessions")
async def create_session(request: web.Request) -> web.Response:
    params = await read_body(request, SessionCreateParams)
    gw, found = gateway(request), objects(request)
    if isinstance(params.agent, str):
        agent_ref, version = params.agent, None
    elif isinstance(params.agent, AgentRefParam):
        agent_ref, version = params.agent.id, params.agent.version
    else:
        raise unsupported("agent_with_overrides", "create an Agent with the overrides instead")
    agent = await found.find(AGENTS, agent_ref)
    if meta.archived_at(agent):
        raise invalid(f"agent {agent_ref} is archived")
    pin = await _pin(found, agent, agent_ref, version)
    explicit_environment = None
    if params.environment_id is not None:
        environment = await found.find(ENVIRONMENTS, params.environment_id)
        if meta.archived_at(environment):
            raise invalid(
                f"environment {params.environment_id} is archived",
                error_code="environment_archived",
            )
        explicit_environment = environment["metadata"]["name"]
    await mounts.check_files(gw, found.namespace, params.resources or [])
    if params.initial_events:
        check_one_outcome(sum(isinstance(e, DefineOutcomeParam) for e in params.initial_events))
        initial = [
            await with_text_rubric(gw, found.namespace, event)
            if isinstance(event, DefineOutcomeParam)
            else event
            for event in params.initial_events
        ]
        params = params.model_copy(update={"initial_events": initial})
    spec = session_spec(params, agent["metadata"]["name"], explicit_environment)
    vault_ids = await _vault_ids(found, params.vault_ids or [])
    if vault_ids:
        spec["vaultIds"] = vault_ids
    spec["agentRef"]["version"] = pin.version
    resolved = environment_name(checked(SessionSpec, spec), pin.spec)
    if resolved is None:
        raise invalid(f"environment_id is required: agent {agent_ref} has no default environment")
    annotations = {}
    if params.metadata:
        annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(params.metadata)
    # Finish even if the client goes away: a log without its resource would be left behind.
    obj, snapshot = await asyncio.shield(_create(gw, found, spec, annotations, resolved, pin))
    return respond(
        await _Resolver(found, [agent], log=gw.log.tenant(found.namespace)).view(
            obj, snapshot, meta.now()
        )
    )


async def _vault_ids(found: Objects, refs: list[str]) -> list[str]:
    """The ids of the vaults ``refs`` name (ids, or Kubernetes names); 404 for one that is
    not there, 400 for an archived one, as the reference's `vault_*_error`s."""
    ids: list[str] = []
    for ref in refs:
        vault = await found.get(VAULTS, ref)
        if vault is None:
            raise not_found(f"vault {ref} not found", error_code="vault_not_found_error")
        if meta.archived_at(vault):
            raise invalid(f"vault {ref} is archived", error_code="vault_archived_error")
        vault_id = meta.labels(vault)[meta.VAULT_ID_LABEL]
        if vault_id not in ids:
            ids.append(vault_id)
    return ids


async def _pin(found: Objects, agent: dict[str, Any], ref: str, version: int | None) -> AgentPin:
    """The Agent version a new session runs to its end: the one asked for, else the current
    one (`paddock.kube.pin_version`)."""
    kept = await found.pin_agent_version(agent, version)
    if kept is None:
        raise not_found(version_missing(ref, version or generation(agent), agent))
    return AgentPin(version=kept.version, spec=AgentSpec.model_validate(kept.spec))


async def _create(
    gw: Gateway,
    found: Objects,
    spec: dict[str, Any],
    annotations: dict[str, str],
    environment: str,
    pin: AgentPin,
) -> tuple[dict[str, Any], SessionSnapshot]:
    session_id = new_session_id()
    name = meta.session_object_name(session_id)
    session = Session.model_validate(
        {"metadata": {"name": name, "namespace": found.namespace}, "spec": spec}
    )
    try:
        await open_session(
            gw.log, gw.state, session_id, session, environment=environment, agent=pin
        )
    except RedisError as exc:
        raise unavailable("the event log is unavailable") from exc
    try:
        obj = await found.create(SESSIONS, name, session_id, spec, annotations)
        return obj, await gw.log.tenant(found.namespace).snapshot(session_id)
    except BaseException:
        # No resource, no session: its log goes (nothing else would ever delete it).
        with contextlib.suppress(RedisError):
            await gw.log.tenant(found.namespace).delete_session(session_id)
        raise


@routes.get("/v1/sessions/{session_id}")
async def retrieve_session(request: web.Request) -> web.Response:
    gw, found = gateway(request), objects(request)
    obj = await found.find(SESSIONS, request.match_info["session_id"])
    snapshot = await snapshot_or_none(gw, found.namespace, session_id_of(obj))
    resolver = _Resolver(
        found, state=gw.state.tenant(found.namespace), log=gw.log.tenant(found.namespace)
    )
    return respond(await resolver.view(obj, snapshot, meta.now()))


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    query = request.query
    gw, found = gateway(request), objects(request)
    limit = limit_param(query, default=20, maximum=100)
    order = order_param(query, "desc")
    archived = bool_param(query, "include_archived")
    tests = time_filters(query, ("gt", "gte", "lt", "lte"))
    statuses = set(list_param(query, "statuses"))
    if statuses - set(_STATUSES):
        raise invalid(f"statuses: each must be one of {', '.join(_STATUSES)}")
    sessions, agents = await asyncio.gather(found.list(SESSIONS), found.list(AGENTS))
    agent_name, agent_version = None, None
    if "agent_id" in query:
        matches = [a for a in agents if meta.labels(a)[meta.AGENT_ID_LABEL] == query["agent_id"]]
        if not matches:
            return respond(_NO_SESSIONS)
        agent_name = matches[0]["metadata"]["name"]
        if "agent_version" in query:
            if not query["agent_version"].isdigit():
                raise invalid("agent_version: must be a positive integer")
            agent_version = int(query["agent_version"])
    items = [
        obj
        for obj in sessions
        if (archived or not meta.archived_at(obj))
        and (agent_name is None or obj["spec"]["agentRef"]["name"] == agent_name)
        and (agent_version is None or pinned_version(obj) == agent_version)
        and all(test(meta.parse_time(meta.created_at(obj))) for test in tests)
    ]
    # Snapshots of many sessions in one round trip; sessions without a log are left out.
    snapshots: dict[str, SessionSnapshot] = {}
    if statuses:
        snapshots = await gw.log.tenant(found.namespace).snapshots(
            [session_id_of(obj) for obj in items]
        )
        items = [
            obj
            for obj in items
            if session_status(obj, snapshots.get(session_id_of(obj))) in statuses
        ]
    page = paginate(
        items,
        lambda obj: (meta.created_at(obj), session_id_of(obj)),
        limit=limit,
        order=order,
        page=query.get("page"),
    )
    if not statuses:
        snapshots = await gw.log.tenant(found.namespace).snapshots(
            [session_id_of(obj) for obj in page.data]
        )
    resolver, at = (
        _Resolver(found, agents, gw.state.tenant(found.namespace), gw.log.tenant(found.namespace)),
        meta.now(),
    )
    data = [await resolver.view(obj, snapshots.get(session_id_of(obj)), at) for obj in page.data]
    return respond(SessionPage(data=data, next_page=page.next_page, prev_page=page.prev_page))


@routes.post("/v1/sessions/{session_id}")
async def update_session(request: web.Request) -> web.Response:
    ref = request.match_info["session_id"]
    params = await read_body(request, SessionUpdateParams)
    gw, found = gateway(request), objects(request)
    if params.agent is not None:
        raise unsupported(
            "agent updates of a session",
            "a session runs the Agent version it was created with; "
            "start a new session to run a newer one",
        )
    if "vault_ids" in params.model_fields_set:
        raise invalid("vault_ids: a session's vaults are set when it is created")
    given = params.model_fields_set
    obj = await found.find(SESSIONS, ref)
    session_id = session_id_of(obj)
    snapshot = await snapshot_or_none(gw, found.namespace, session_id)
    if snapshot is not None and snapshot.status == "terminated":
        raise conflict(f"session {ref} is terminated")

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        new = copy.deepcopy(current)
        spec = new["spec"]
        if "title" in given:
            if params.title:
                spec["title"] = params.title
            else:
                spec.pop("title", None)
        if "budget" in given:
            if params.budget is None:
                spec.pop("budget", None)
            else:
                spec["budget"] = {"maxListCost": params.budget.max_list_cost.model_dump()}
        checked(SessionSpec, spec)
        annotations = new["metadata"].setdefault("annotations", {})
        if params.metadata:
            metadata = meta.patched_metadata(meta.api_metadata(current), params.metadata)
            annotations[meta.METADATA_ANNOTATION] = meta.metadata_annotation(metadata)
        if new == current:
            return None
        annotations[meta.UPDATED_AT_ANNOTATION] = meta.rfc3339(meta.now())
        return new

    updated = await found.update(SESSIONS, ref, change)
    if "budget" in given and snapshot is not None:
        # Workers read the budget from the session settings, not from the resource.
        session = Session.model_validate(updated)
        await mounts.refresh_settings(gw, found.namespace, session_id, session)
    resolver = _Resolver(
        found, state=gw.state.tenant(found.namespace), log=gw.log.tenant(found.namespace)
    )
    return respond(await resolver.view(updated, snapshot, meta.now()))


@routes.delete("/v1/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    gw, found = gateway(request), objects(request)
    obj = await found.find(SESSIONS, request.match_info["session_id"])
    session_id = session_id_of(obj)
    answer = await found.delete(SESSIONS, obj)
    if answer is not None and not (answer.get("metadata") or {}).get("finalizers"):
        # Deleted at once: the operator never added its finalizer, so nobody else will
        # remove the log.
        try:
            await gw.log.tenant(found.namespace).delete_session(session_id)
        except RedisError as exc:
            raise unavailable("the session is deleted but its event log could not be") from exc
    return respond(SessionDeleted(id=session_id))


@routes.post("/v1/sessions/{session_id}/archive")
async def archive_session(request: web.Request) -> web.Response:
    """Archiving makes the session read-only: `spec.cancel`, so the operator terminates it."""
    gw, found = gateway(request), objects(request)

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        new = meta.archived_copy(current)
        if new is not None:
            new["spec"]["cancel"] = True
        return new

    archived = await found.update(SESSIONS, request.match_info["session_id"], change)
    snapshot = await snapshot_or_none(gw, found.namespace, session_id_of(archived))
    resolver = _Resolver(
        found, state=gw.state.tenant(found.namespace), log=gw.log.tenant(found.namespace)
    )
    return respond(await resolver.view(archived, snapshot, meta.now()))
