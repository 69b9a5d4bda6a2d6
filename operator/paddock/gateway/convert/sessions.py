"""Sessions: an API create request to a Session spec, and a Session resource (with its
log's snapshot) as the API's `session` view."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from paddock.eventlog import SessionSnapshot
from paddock.gateway import views
from paddock.gateway.convert.meta import (
    SESSION_ID_LABEL,
    annotations_of,
    api_metadata,
    archived_at,
    created_at,
    labels,
    parse_time,
    rfc3339,
    updated_at,
)
from paddock.gateway.errors import unsupported
from paddock.gateway.params import (
    DefineOutcomeParam,
    FileResourceParam,
    GitHubRepositoryParam,
    ResourceParam,
    SessionCreateParams,
    TextRubricParam,
)
from paddock.models import ConditionType, SessionResource, SessionSpec


def _repository(resource: GitHubRepositoryParam) -> dict[str, Any]:
    if resource.authorization_token is not None:
        raise unsupported(
            "resources.authorization_token",
            "the credential proxy adds the token of the Agent's credentials.hosts",
        )
    repository: dict[str, Any] = {"url": resource.url}
    if resource.checkout is not None:
        if resource.checkout.type == "branch":
            repository["branch"] = resource.checkout.name
        else:
            repository["commit"] = resource.checkout.sha
    if resource.mount_path:
        repository["mountPath"] = resource.mount_path
    return {"gitRepository": repository}


UPLOADS_DIR = "/mnt/session/uploads"
"""Where a file resource is mounted when its `mount_path` is not given (reference §3.3)."""
RESOURCE_TIMES_ANNOTATION = "paddock.dev/resources-added"
"""When each resource added to a running session was added (JSON, by resource id)."""


def _file(resource: FileResourceParam) -> dict[str, Any]:
    path = resource.mount_path or f"{UPLOADS_DIR}/{resource.file_id}"
    return {"file": {"path": path, "fileId": resource.file_id}}


def resource_spec(resource: ResourceParam) -> dict[str, Any]:
    """A resource of a create or add request as a `spec.resources` item (camelCase)."""
    if isinstance(resource, GitHubRepositoryParam):
        return _repository(resource)
    if isinstance(resource, FileResourceParam):
        return _file(resource)
    raise unsupported(f"resources of type {resource.type}", "only github_repository and file")


def session_spec(
    params: SessionCreateParams, agent_name: str, environment_name: str | None
) -> dict[str, Any]:
    """The `spec` of the Session a create request describes (camelCase)."""
    spec: dict[str, Any] = {"agentRef": {"name": agent_name}}
    if environment_name is not None:
        spec["environmentRef"] = {"name": environment_name}
    if params.title:
        spec["title"] = params.title
    resources = [resource_spec(resource) for resource in params.resources or []]
    if resources:
        spec["resources"] = resources
    initial = []
    for event in params.initial_events or []:
        if isinstance(event, DefineOutcomeParam):
            # A file rubric was replaced by its text already (`gateway.outcomes`).
            assert isinstance(event.rubric, TextRubricParam)
            outcome: dict[str, Any] = {
                "type": "user.define_outcome",
                "description": event.description,
                "rubric": {"type": "text", "content": event.rubric.content},
            }
            if event.max_iterations is not None:
                outcome["maxIterations"] = event.max_iterations
            initial.append(outcome)
            continue
        blocks = []
        for block in event.content:
            if block.type != "text" or not block.text:
                raise unsupported(
                    "initial_events content other than non-empty text",
                    "send it with events.send after creating the session",
                )
            blocks.append({"type": "text", "text": block.text})
        initial.append({"type": "user.message", "content": blocks})
    if initial:
        spec["initialEvents"] = initial
    if params.budget is not None:
        spec["budget"] = {"maxListCost": params.budget.max_list_cost.model_dump()}
    return spec


def _budget_view(spec: SessionSpec) -> views.BudgetLimit | None:
    cost = spec.budget.max_list_cost if spec.budget else None
    if cost is None:
        return None
    return views.BudgetLimit(
        max_list_cost=views.MonetaryAmount(amount=cost.amount, currency=cost.currency)
    )


def mount_path(resource: SessionResource) -> str:
    """Where ``resource`` is in the sandbox; one resource per path, so it names it."""
    if resource.file is not None:
        return resource.file.path
    assert resource.git_repository is not None
    repository = resource.git_repository
    name = repository.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return repository.mount_path or f"/workspace/{name}"


def resource_id(resource: SessionResource) -> str:
    """A resource's id, stable while others are added and deleted: made from its path."""
    return "sres_" + hashlib.sha256(mount_path(resource).encode()).hexdigest()[:24]


def resources_view(obj: dict[str, Any], spec: SessionSpec) -> list[views.SessionResource]:
    added = json.loads(annotations_of(obj).get(RESOURCE_TIMES_ANNOTATION) or "{}")
    resources: list[views.SessionResource] = []
    for resource in spec.resources:
        key = resource_id(resource)
        stamp = added.get(key) or created_at(obj)
        ids = {"id": key, "created_at": stamp, "updated_at": stamp}
        if resource.git_repository is not None:
            repository = resource.git_repository
            checkout: views.BranchCheckout | views.CommitCheckout | None = None
            if repository.branch:
                checkout = views.BranchCheckout(name=repository.branch)
            elif repository.commit:
                checkout = views.CommitCheckout(sha=repository.commit)
            resources.append(
                views.GitHubRepositoryResource(
                    **ids,
                    type="github_repository",
                    url=repository.url,
                    mount_path=mount_path(resource),
                    checkout=checkout,
                )
            )
        elif resource.file is not None:
            resources.append(
                views.FileResource(
                    **ids,
                    type="file",
                    file_id=resource.file.file_id or "",
                    mount_path=resource.file.path,
                )
            )
    return resources


_PHASE_STATUS: dict[str, views.SessionStatus] = {
    "Running": "running",
    "Rescheduling": "rescheduling",
    "Terminated": "terminated",
}


def session_status(obj: dict[str, Any], snapshot: SessionSnapshot | None) -> views.SessionStatus:
    """From the log; before the log exists, from the resource's phase (else `idle`)."""
    if snapshot is not None:
        return snapshot.status
    return _PHASE_STATUS.get((obj.get("status") or {}).get("phase", ""), "idle")


def session_view(
    obj: dict[str, Any],
    agent: views.SessionAgent,
    environment_id: str | None,
    snapshot: SessionSnapshot | None,
    at: datetime,
    outcomes: list[views.OutcomeEvaluation] | None = None,
) -> views.Session:
    """A Session resource as a Managed Agents `session`. Live status and usage come from
    the log's ``snapshot``; before the log exists, from the resource's status. An
    Environment that is gone shows as an empty ``environment_id`` (the SDK requires one)."""
    spec = SessionSpec.model_validate(obj["spec"])
    status_block = obj.get("status") or {}
    created = parse_time(created_at(obj))
    updated = parse_time(updated_at(obj))
    status = session_status(obj, snapshot)
    stored_cost = (status_block.get("usage") or {}).get("listCost")
    list_cost = views.MonetaryAmount.model_validate(stored_cost) if stored_cost else None
    usage = views.SessionUsage(list_cost=list_cost)
    if snapshot is not None:
        updated = max(updated, snapshot.updated_at)
        usage = views.SessionUsage(
            input_tokens=snapshot.usage.input_tokens,
            output_tokens=snapshot.usage.output_tokens,
            cache_read_input_tokens=snapshot.usage.cache_read_input_tokens,
            # The harness caches with the default five-minute lifetime.
            cache_creation=views.CacheCreation(
                ephemeral_5m_input_tokens=snapshot.usage.cache_creation_input_tokens
            ),
            active_seconds=snapshot.usage.active_seconds,
            list_cost=list_cost,
        )
    end = updated if status == "terminated" else at
    # A Paddock extension: why the session makes no progress, as the operator sees it.
    waiting = next(
        (
            c.get("message") or None
            for c in status_block.get("conditions") or []
            if c.get("type") == ConditionType.SCHEDULED and c.get("status") == "False"
        ),
        None,
    )
    return views.Session(
        id=labels(obj)[SESSION_ID_LABEL],
        status=status,
        title=spec.title,
        environment_id=environment_id or "",
        agent=agent,
        resources=resources_view(obj, spec),
        vault_ids=list(spec.vault_ids),
        metadata=api_metadata(obj),
        outcome_evaluations=outcomes or [],
        budget=_budget_view(spec),
        stats=views.SessionStats(
            active_seconds=usage.active_seconds,
            duration_seconds=round(max((end - created).total_seconds(), 0.0), 3),
        ),
        usage=usage,
        created_at=created_at(obj),
        updated_at=rfc3339(updated),
        archived_at=archived_at(obj),
        status_message=waiting if status in ("idle", "rescheduling") else None,
    )
