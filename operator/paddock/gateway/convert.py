"""Between Managed Agents JSON and Paddock's custom resources: pure functions.

Where things live on an object (docs/gateway.md has the table):
- the Managed Agents id in a label (`paddock.dev/agent-id`, `environment-id`, `session-id`):
  Kubernetes names cannot hold `_`;
- fields the CRDs do not have (the free-text `name`, an Environment's `description`,
  `metadata`, archive and update times) in `paddock.dev/*` annotations;
- everything the operator and the harness act on in `spec`.
"""

# No `from __future__ import annotations`: `annotations()` below would shadow it.
import copy
import json
import re
import secrets
import string
from datetime import UTC, datetime
from typing import Any

from paddock.eventlog import SessionSnapshot
from paddock.gateway.errors import invalid, unsupported
from paddock.gateway.params import (
    AgentCreateParams,
    AgentToolsetParam,
    CloudConfigParam,
    ConfigParam,
    CustomToolParam,
    GitHubRepositoryParam,
    LimitedNetworkParam,
    McpToolsetParam,
    ModelParam,
    PermissionPolicyParam,
    SessionCreateParams,
    UnrestrictedNetworkParam,
)
from paddock.models.agent import BUILTIN_TOOL_NAMES, AgentSpec
from paddock.models.environment import EnvironmentSpec
from paddock.models.session import SessionSpec

AGENT_ID_LABEL = "paddock.dev/agent-id"
ENVIRONMENT_ID_LABEL = "paddock.dev/environment-id"
SESSION_ID_LABEL = "paddock.dev/session-id"
NAME_ANNOTATION = "paddock.dev/name"
DESCRIPTION_ANNOTATION = "paddock.dev/description"
METADATA_ANNOTATION = "paddock.dev/metadata"
ARCHIVED_AT_ANNOTATION = "paddock.dev/archived-at"
UPDATED_AT_ANNOTATION = "paddock.dev/updated-at"

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_SLUG_LENGTH = 40


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """`2026-04-08T12:00:00.123Z`: RFC 3339 in UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (`Z` or an offset); ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


def object_name(text: str, fallback: str) -> str:
    """A Kubernetes name for an object the API creates: a slug of ``text`` (or
    ``fallback`` if nothing of it is left) and five random characters, `my-agent-x7k2p`."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:_SLUG_LENGTH].strip("-")
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    return f"{slug or fallback}-{suffix}"


def session_object_name(session_id: str) -> str:
    """The Kubernetes name of a Session the API creates: its id in lowercase with `-` for
    `_` (`sesn_0Ab…` → `sesn-0ab…`), so `kubectl` users find it by the id they were given."""
    return session_id.lower().replace("_", "-")


# Metadata, timestamps and other annotations.


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def api_metadata(obj: dict[str, Any]) -> dict[str, str]:
    """The Managed Agents `metadata` map stored on ``obj``."""
    try:
        stored = json.loads(annotations(obj).get(METADATA_ANNOTATION, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def patched_metadata(
    current: dict[str, str], patch: dict[str, str | None], *, empty_deletes: bool = False
) -> dict[str, str]:
    """``current`` with ``patch`` applied: a value sets, None (and "" if ``empty_deletes``)
    deletes. At most 16 keys may remain."""
    result = dict(current)
    for key, value in patch.items():
        if value is None or (empty_deletes and value == ""):
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 16:
        raise invalid("metadata: at most 16 keys")
    return result


def metadata_annotation(metadata: dict[str, str]) -> str:
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True)


def created_at(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("creationTimestamp", ""))


def updated_at(obj: dict[str, Any]) -> str:
    return annotations(obj).get(UPDATED_AT_ANNOTATION) or created_at(obj)


def archived_at(obj: dict[str, Any]) -> str | None:
    return annotations(obj).get(ARCHIVED_AT_ANNOTATION)


def archived_copy(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``obj`` marked archived now; None if it is archived already."""
    if archived_at(obj):
        return None
    new = copy.deepcopy(obj)
    stamp = rfc3339(now())
    new["metadata"].setdefault("annotations", {}).update(
        {ARCHIVED_AT_ANNOTATION: stamp, UPDATED_AT_ANNOTATION: stamp}
    )
    return new


def display_name(obj: dict[str, Any]) -> str:
    """The API's `name`: what the creator called it, else the Kubernetes name."""
    return annotations(obj).get(NAME_ANNOTATION) or obj["metadata"]["name"]


# Agents.


def _policy(param: PermissionPolicyParam | None, default: str, where: str) -> str:
    if param is None:
        return default
    if param.type == "auto":
        raise unsupported(f"{where}: permission policy `auto`", "use always_allow or always_ask")
    return param.type


def model_id(model: ModelParam) -> str:
    """The model id of a `model` field; refuses settings the harness does not apply."""
    if isinstance(model, str):
        return model
    if model.effort is not None:
        raise unsupported("model.effort")
    if model.speed == "fast":
        raise unsupported("model.speed `fast`")
    if model.inference_geo is not None:
        raise unsupported("model.inference_geo")
    return model.id


def _builtin_toolset(toolsets: list[AgentToolsetParam]) -> dict[str, Any]:
    if not toolsets:
        # No toolset entry: the Agent offers no built-in tool.
        return {"enabled": False}
    if len(toolsets) > 1:
        raise invalid("tools: at most one agent_toolset_20260401 entry")
    toolset = toolsets[0]
    default = toolset.default_config
    builtin: dict[str, Any] = {
        "enabled": default.enabled if default and default.enabled is not None else True,
        "permissionPolicy": _policy(
            default.permission_policy if default else None,
            "always_allow",
            "tools.default_config",
        ),
        "configs": [],
    }
    for config in toolset.configs or []:
        if config.name not in BUILTIN_TOOL_NAMES:
            raise unsupported(f"the built-in tool {config.name}", "the sandbox has none")
        if config.type is not None and config.type != config.name:
            raise invalid(f"tools.configs: type {config.type!r} differs from name {config.name!r}")
        if any(entry["name"] == config.name for entry in builtin["configs"]):
            raise invalid(f"tools.configs: {config.name} is configured twice")
        entry: dict[str, Any] = {"name": config.name}
        if config.enabled is not None:
            entry["enabled"] = config.enabled
        if config.permission_policy is not None:
            entry["permissionPolicy"] = _policy(
                config.permission_policy, "always_allow", f"tools.configs.{config.name}"
            )
        builtin["configs"].append(entry)
    return builtin


def _mcp_toolset(toolset: McpToolsetParam, servers: set[str]) -> dict[str, Any]:
    where = f"tools.mcp_toolset {toolset.mcp_server_name}"
    if toolset.mcp_server_name not in servers:
        raise invalid(f"{where}: no mcp_servers entry has this name")
    if toolset.configs:
        raise unsupported(f"{where}: per-tool configs", "one policy applies to all its tools")
    default = toolset.default_config
    if default is not None and default.enabled is False:
        raise unsupported(f"{where}: default_config.enabled false", "remove the toolset instead")
    return {
        "serverName": toolset.mcp_server_name,
        "permissionPolicy": _policy(
            default.permission_policy if default else None, "always_ask", where
        ),
    }


def agent_spec_fields(params: AgentCreateParams) -> dict[str, Any]:
    """The Agent `spec` fields the API manages (`model`, `system`, `description`, `tools`,
    `mcpServers`), camelCase; ApiError for what Paddock cannot do."""
    if params.skills:
        raise unsupported("skills")
    if params.multiagent is not None:
        raise unsupported("multiagent")
    if params.execution_identity is not None and params.execution_identity.type != (
        "service_account"
    ):
        raise unsupported(f"execution_identity {params.execution_identity.type!r}")
    tools = params.tools or []
    servers = params.mcp_servers or []
    names = [server.name for server in servers]
    if len(set(names)) != len(names):
        raise invalid("mcp_servers: names must be unique")
    toolsets = [tool for tool in tools if isinstance(tool, McpToolsetParam)]
    unreferenced = set(names) - {toolset.mcp_server_name for toolset in toolsets}
    if unreferenced:
        raise invalid(f"mcp_servers: {sorted(unreferenced)[0]} is not used by any mcp_toolset")
    custom = [tool for tool in tools if isinstance(tool, CustomToolParam)]
    for tool in custom:
        if tool.name in BUILTIN_TOOL_NAMES:
            raise invalid(f"tools: custom tool {tool.name} shadows a built-in tool")
    fields: dict[str, Any] = {
        "model": model_id(params.model),
        "tools": {
            "builtin": _builtin_toolset([t for t in tools if isinstance(t, AgentToolsetParam)]),
            "custom": [
                {
                    "name": tool.name,
                    "description": tool.description,
                    "inputSchema": tool.input_schema.model_dump(mode="json"),
                }
                for tool in custom
            ],
            "mcp": [_mcp_toolset(toolset, set(names)) for toolset in toolsets],
        },
        "mcpServers": [{"name": server.name, "url": server.url} for server in servers],
    }
    if params.system:
        fields["system"] = params.system
    if params.description:
        fields["description"] = params.description
    return fields


def _resolved_tools(spec: AgentSpec, raw_spec: dict[str, Any]) -> list[dict[str, Any]]:
    builtin = spec.tools.builtin
    enabled = {name: builtin.enabled for name in BUILTIN_TOOL_NAMES}
    for config in builtin.configs:
        if config.enabled is not None:
            enabled[config.name] = config.enabled
    tools: list[dict[str, Any]] = []
    if any(enabled.values()):
        tools.append(
            {
                "type": "agent_toolset_20260401",
                "default_config": {
                    "enabled": builtin.enabled,
                    "permission_policy": {"type": builtin.permission_policy},
                },
                "configs": [
                    {
                        "name": config.name,
                        "type": config.name,
                        "enabled": enabled[config.name],
                        "permission_policy": {
                            "type": config.permission_policy or builtin.permission_policy
                        },
                    }
                    for config in builtin.configs
                ],
            }
        )
    for toolset in spec.tools.mcp:
        tools.append(
            {
                "type": "mcp_toolset",
                "mcp_server_name": toolset.server_name,
                "default_config": {
                    "enabled": True,
                    "permission_policy": {"type": toolset.permission_policy},
                },
                "configs": [],
            }
        )
    # The input schema as stored: the model would rename nothing, but keep it verbatim.
    raw_custom = raw_spec.get("tools", {}).get("custom", [])
    for tool, raw in zip(spec.tools.custom, raw_custom, strict=False):
        tools.append(
            {
                "type": "custom",
                "name": tool.name,
                "description": tool.description,
                "input_schema": raw.get("inputSchema", {"type": "object"}),
            }
        )
    return tools


def _agent_core(obj: dict[str, Any]) -> dict[str, Any]:
    spec = AgentSpec.model_validate(obj["spec"])
    return {
        "type": "agent",
        "id": labels(obj)[AGENT_ID_LABEL],
        "version": int(obj["metadata"].get("generation", 1)),
        "name": display_name(obj),
        "description": spec.description,
        "model": {"id": spec.model, "speed": "standard"},
        "system": spec.system,
        "tools": _resolved_tools(spec, obj["spec"]),
        "mcp_servers": [
            {"type": "url", "name": server.name, "url": server.url} for server in spec.mcp_servers
        ],
        "skills": [],
        "multiagent": None,
        "execution_identity": {"type": "service_account"},
    }


def agent_view(obj: dict[str, Any]) -> dict[str, Any]:
    """An Agent resource (with its id label) as a Managed Agents `agent`."""
    return {
        **_agent_core(obj),
        "metadata": api_metadata(obj),
        "created_at": created_at(obj),
        "updated_at": updated_at(obj),
        "archived_at": archived_at(obj),
    }


def session_agent_view(obj: dict[str, Any] | None, name: str) -> dict[str, Any]:
    """The `agent` of a session: the Agent as it is now (Paddock sessions run their Agent's
    current spec). An Agent that is gone shows as an empty stand-in named ``name``."""
    if obj is None:
        return {
            "type": "agent",
            "id": "",
            "version": 0,
            "name": name,
            "description": None,
            "model": {"id": ""},
            "system": None,
            "tools": [],
            "mcp_servers": [],
            "skills": [],
            "multiagent": None,
            "execution_identity": {"type": "service_account"},
        }
    return _agent_core(obj)


# Environments.


def _networking_fields(
    networking: UnrestrictedNetworkParam | LimitedNetworkParam,
) -> dict[str, Any]:
    if isinstance(networking, UnrestrictedNetworkParam):
        return {"mode": "open"}
    if networking.allow_mcp_servers:
        raise unsupported(
            "networking.allow_mcp_servers",
            "the harness reaches MCP servers, not the sandbox; list hosts in allowed_hosts",
        )
    return {
        "mode": "limited",
        # Host names are case-insensitive; the Environment wants them in lowercase.
        "allowedDomains": [host.lower() for host in networking.allowed_hosts or []],
        "allowPackageManagers": bool(networking.allow_package_managers),
    }


def environment_spec(config: ConfigParam | None, current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (an Environment spec, camelCase) with an API `config` applied: given
    `networking` and `packages` replace the stored ones, omitted ones are kept."""
    if config is None:
        return dict(current)
    if not isinstance(config, CloudConfigParam):
        raise unsupported(
            "config type self_hosted",
            "Paddock runs the sandboxes itself; use a cloud config",
        )
    spec = dict(current)
    if config.networking is not None:
        spec["networking"] = _networking_fields(config.networking)
    if config.packages is not None:
        packages = config.packages
        for manager in ("cargo", "gem", "go"):
            if getattr(packages, manager):
                raise unsupported(f"config.packages.{manager}", "only apt, pip and npm")
        spec["packages"] = {
            manager: list(getattr(packages, manager))
            for manager in ("apt", "pip", "npm")
            if getattr(packages, manager)
        }
    networking = spec.get("networking", {})
    if any(spec.get("packages", {}).values()) and not (
        networking.get("mode") == "open" or networking.get("allowPackageManagers")
    ):
        raise invalid(
            "config.packages needs networking unrestricted, or limited with "
            "allow_package_managers: true"
        )
    return spec


def environment_config_view(spec: EnvironmentSpec) -> dict[str, Any]:
    networking: dict[str, Any]
    if spec.networking.mode == "open":
        networking = {"type": "unrestricted"}
    else:
        # `none` is `limited` with nothing allowed: the API has no separate mode for it.
        networking = {
            "type": "limited",
            "allowed_hosts": list(spec.networking.allowed_domains),
            "allow_mcp_servers": False,
            "allow_package_managers": spec.networking.allow_package_managers,
        }
    packages = spec.packages
    return {
        "type": "cloud",
        "networking": networking,
        "packages": {
            "type": "packages",
            "apt": list(packages.apt) if packages else [],
            "cargo": [],
            "gem": [],
            "go": [],
            "npm": list(packages.npm) if packages else [],
            "pip": list(packages.pip) if packages else [],
        },
    }


def environment_view(obj: dict[str, Any]) -> dict[str, Any]:
    """An Environment resource (with its id label) as a Managed Agents `environment`."""
    spec = EnvironmentSpec.model_validate(obj.get("spec") or {})
    return {
        "type": "environment",
        "id": labels(obj)[ENVIRONMENT_ID_LABEL],
        "name": display_name(obj),
        "description": annotations(obj).get(DESCRIPTION_ANNOTATION),
        "metadata": api_metadata(obj),
        "scope": "organization",
        "config": environment_config_view(spec),
        "created_at": created_at(obj),
        "updated_at": updated_at(obj),
        "archived_at": archived_at(obj),
    }


# Sessions.


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


def session_spec(
    params: SessionCreateParams, agent_name: str, environment_name: str | None
) -> dict[str, Any]:
    """The `spec` of the Session a create request describes (camelCase)."""
    if params.vault_ids:
        raise unsupported("vault_ids", "credentials come from the Agent's Secrets")
    spec: dict[str, Any] = {"agentRef": {"name": agent_name}}
    if environment_name is not None:
        spec["environmentRef"] = {"name": environment_name}
    if params.title:
        spec["title"] = params.title
    resources = []
    for resource in params.resources or []:
        if not isinstance(resource, GitHubRepositoryParam):
            raise unsupported(f"resources of type {resource.type}", "only github_repository")
        resources.append(_repository(resource))
    if resources:
        spec["resources"] = resources
    initial = []
    for event in params.initial_events or []:
        if event.type != "user.message":
            raise unsupported(f"initial event {event.type}")
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


def budget_view(spec: SessionSpec) -> dict[str, Any] | None:
    cost = spec.budget.max_list_cost if spec.budget else None
    if cost is None:
        return None
    return {"type": "limit", "max_list_cost": {"amount": cost.amount, "currency": cost.currency}}


def _resources_view(obj: dict[str, Any], spec: SessionSpec) -> list[dict[str, Any]]:
    stamp = created_at(obj)
    views = []
    for index, resource in enumerate(spec.resources):
        base = {"id": f"sres_{index}", "created_at": stamp, "updated_at": stamp}
        if resource.git_repository is not None:
            repository = resource.git_repository
            checkout = None
            if repository.branch:
                checkout = {"type": "branch", "name": repository.branch}
            elif repository.commit:
                checkout = {"type": "commit", "sha": repository.commit}
            name = repository.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            views.append(
                {
                    **base,
                    "type": "github_repository",
                    "url": repository.url,
                    "mount_path": repository.mount_path or f"/workspace/{name}",
                    "checkout": checkout,
                }
            )
        elif resource.file is not None:
            views.append({**base, "type": "file", "file_id": "", "mount_path": resource.file.path})
    return views


_PHASE_STATUS = {"Running": "running", "Rescheduling": "rescheduling", "Terminated": "terminated"}


def session_status(obj: dict[str, Any], snapshot: SessionSnapshot | None) -> str:
    """From the log; before the log exists, from the resource's phase (else `idle`)."""
    if snapshot is not None:
        return snapshot.status
    return _PHASE_STATUS.get((obj.get("status") or {}).get("phase", ""), "idle")


def session_view(
    obj: dict[str, Any],
    agent: dict[str, Any],
    environment_id: str | None,
    snapshot: SessionSnapshot | None,
    at: datetime,
) -> dict[str, Any]:
    """A Session resource as a Managed Agents `session`. Live status and usage come from
    the log's ``snapshot``; before the log exists, from the resource's status."""
    spec = SessionSpec.model_validate(obj["spec"])
    status_block = obj.get("status") or {}
    created = parse_time(created_at(obj))
    updated = parse_time(updated_at(obj))
    status = session_status(obj, snapshot)
    usage: dict[str, Any]
    if snapshot is not None:
        updated = max(updated, snapshot.updated_at)
        usage = {
            "input_tokens": snapshot.usage.input_tokens,
            "output_tokens": snapshot.usage.output_tokens,
            "cache_read_input_tokens": snapshot.usage.cache_read_input_tokens,
            "cache_creation": {
                # The harness caches with the default five-minute lifetime.
                "ephemeral_5m_input_tokens": snapshot.usage.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "active_seconds": snapshot.usage.active_seconds,
        }
    else:
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "active_seconds": 0,
        }
    list_cost = (status_block.get("usage") or {}).get("listCost")
    if list_cost:
        usage["list_cost"] = list_cost
    end = updated if status == "terminated" else at
    # A Paddock extension: why the session makes no progress, as the operator sees it.
    waiting = next(
        (
            c.get("message") or None
            for c in status_block.get("conditions") or []
            if c.get("type") == "Scheduled" and c.get("status") == "False"
        ),
        None,
    )
    return {
        "type": "session",
        "id": labels(obj)[SESSION_ID_LABEL],
        "status": status,
        "title": spec.title,
        "environment_id": environment_id,
        "agent": agent,
        "resources": _resources_view(obj, spec),
        "vault_ids": [],
        "metadata": api_metadata(obj),
        "outcome_evaluations": [],
        "budget": budget_view(spec),
        "deployment_id": None,
        "stats": {
            "active_seconds": usage["active_seconds"],
            "duration_seconds": round(max((end - created).total_seconds(), 0.0), 3),
        },
        "usage": usage,
        "created_at": created_at(obj),
        "updated_at": rfc3339(updated),
        "archived_at": archived_at(obj),
        "status_message": waiting if status in ("idle", "rescheduling") else None,
    }
