"""Agents: an API create (or merged update) request to the Agent spec fields the API owns,
and an Agent resource to the API's `agent` view."""

from __future__ import annotations

import json
from typing import Any

from paddock.gateway import views
from paddock.gateway.convert.meta import (
    AGENT_ID_LABEL,
    UPDATED_AT_ANNOTATION,
    annotations_of,
    api_metadata,
    archived_at,
    created_at,
    display_name,
    labels,
    updated_at,
)
from paddock.gateway.errors import invalid, unsupported
from paddock.gateway.params import (
    AgentCreateParams,
    AgentToolsetParam,
    CustomToolParam,
    McpToolsetParam,
    ModelParam,
    PermissionPolicyParam,
)
from paddock.kube import AgentVersion, generation
from paddock.models import ABSENT_TOOL_NAMES, BUILTIN_TOOL_NAMES, AgentSpec


def _policy(param: PermissionPolicyParam | None, default: str, where: str) -> str:
    if param is None:
        return default
    if param.type == "auto":
        raise unsupported(f"{where}: permission policy `auto`", "use always_allow or always_ask")
    return param.type


def _model_id(model: ModelParam) -> str:
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
        absent = config.name in ABSENT_TOOL_NAMES
        if absent and (config.enabled or (config.enabled is None and builtin["enabled"])):
            raise unsupported(
                f"the built-in tool {config.name}",
                "the sandbox has none; disable it (enabled: false) or leave it out",
            )
        if config.type is not None and config.type != config.name:
            raise invalid(f"tools.configs: type {config.type!r} differs from name {config.name!r}")
        if any(entry["name"] == config.name for entry in builtin["configs"]):
            raise invalid(f"tools.configs: {config.name} is configured twice")
        entry: dict[str, Any] = {"name": config.name}
        if config.enabled is not None or absent:
            # An absent tool's entry says `enabled: false` itself (the CRD requires it).
            entry["enabled"] = bool(config.enabled)
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
    default = toolset.default_config
    fields: dict[str, Any] = {
        "serverName": toolset.mcp_server_name,
        "enabled": default.enabled if default and default.enabled is not None else True,
        "permissionPolicy": _policy(
            default.permission_policy if default else None, "always_ask", where
        ),
        "configs": [],
    }
    for config in toolset.configs or []:
        if any(entry["name"] == config.name for entry in fields["configs"]):
            raise invalid(f"{where}: configs: {config.name} is configured twice")
        entry: dict[str, Any] = {"name": config.name}
        if config.enabled is not None:
            entry["enabled"] = config.enabled
        if config.permission_policy is not None:
            entry["permissionPolicy"] = _policy(
                config.permission_policy, "always_ask", f"{where}: configs.{config.name}"
            )
        fields["configs"].append(entry)
    return fields


def agent_spec_fields(params: AgentCreateParams) -> dict[str, Any]:
    """The Agent `spec` fields the API manages (`model`, `system`, `description`, `tools`,
    `mcpServers`), camelCase; ApiError for what Paddock cannot do. `multiagent` names other
    Agents, so the gateway resolves it apart (`paddock.gateway.agents`)."""
    if params.skills:
        raise unsupported("skills")
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
        "model": _model_id(params.model),
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


def _resolved_tools(spec: AgentSpec, raw_spec: dict[str, Any]) -> list[views.Tool]:
    builtin = spec.tools.builtin
    enabled = {name: builtin.enabled for name in BUILTIN_TOOL_NAMES}
    for config in builtin.configs:
        if config.enabled is not None:
            enabled[config.name] = config.enabled
    tools: list[views.Tool] = []
    if any(enabled.values()):
        tools.append(
            views.AgentToolset(
                default_config=views.ToolsetDefaultConfig(
                    enabled=builtin.enabled,
                    permission_policy=views.PermissionPolicy(type=builtin.permission_policy),
                ),
                configs=[
                    views.ToolConfig(
                        name=config.name,
                        type=config.name,
                        enabled=enabled[config.name],
                        permission_policy=views.PermissionPolicy(
                            type=config.permission_policy or builtin.permission_policy
                        ),
                    )
                    for config in builtin.configs
                ],
            )
        )
    for toolset in spec.tools.mcp:
        tools.append(
            views.McpToolset(
                mcp_server_name=toolset.server_name,
                default_config=views.ToolsetDefaultConfig(
                    enabled=toolset.enabled,
                    permission_policy=views.PermissionPolicy(type=toolset.permission_policy),
                ),
                configs=[
                    views.McpToolConfig(
                        name=config.name,
                        enabled=toolset.enabled if config.enabled is None else config.enabled,
                        permission_policy=views.PermissionPolicy(
                            type=config.permission_policy or toolset.permission_policy
                        ),
                    )
                    for config in toolset.configs
                ],
            )
        )
    # The input schema as stored: the model would rename nothing, but keep it verbatim.
    raw_custom = raw_spec.get("tools", {}).get("custom", [])
    for tool, raw in zip(spec.tools.custom, raw_custom, strict=False):
        tools.append(
            views.CustomTool(
                name=tool.name,
                description=tool.description,
                input_schema=raw.get("inputSchema", {"type": "object"}),
            )
        )
    return tools


def _agent_fields(obj: dict[str, Any]) -> dict[str, Any]:
    spec = AgentSpec.model_validate(obj["spec"])
    return {
        "id": labels(obj)[AGENT_ID_LABEL],
        "version": int(obj["metadata"].get("generation", 1)),
        "name": display_name(obj),
        "description": spec.description,
        "model": views.ModelConfig(id=spec.model, speed="standard"),
        "system": spec.system,
        "tools": _resolved_tools(spec, obj["spec"]),
        "mcp_servers": [
            views.McpServer(name=server.name, url=server.url) for server in spec.mcp_servers
        ],
        "multiagent": multiagent_view(obj) if spec.multiagent else None,
    }


MULTIAGENT_ANNOTATION = "paddock.dev/multiagent"
"""The API's form of an Agent's roster (agent ids and versions), as resolved when set: the
spec names the Agents, the API shows their ids."""


def multiagent_view(obj: dict[str, Any]) -> dict[str, Any]:
    """The `multiagent` of a coordinator Agent as the API shows it."""
    shown = annotations_of(obj).get(MULTIAGENT_ANNOTATION)
    if shown:
        return dict(json.loads(shown))
    # Set through the Agent resource, not the API: the roster by name.
    agents = obj["spec"]["multiagent"]["agents"]
    return {
        "type": "coordinator",
        "agents": [{"type": "agent", "id": a["name"], "version": 0} for a in agents],
    }


def agent_view(obj: dict[str, Any]) -> views.Agent:
    """An Agent resource (with its id label) as a Managed Agents `agent`."""
    return views.Agent(
        **_agent_fields(obj),
        metadata=api_metadata(obj),
        created_at=created_at(obj),
        updated_at=updated_at(obj),
        archived_at=archived_at(obj),
    )


def version_object(agent: dict[str, Any], version: AgentVersion) -> dict[str, Any]:
    """The Agent resource as it was at ``version``: that version's spec, generation and time;
    the rest (id, name, metadata, archival) as it is now, since those are not versioned."""
    if version.version == generation(agent):
        return agent
    meta = dict(agent["metadata"])
    annotations = dict(meta.get("annotations") or {})
    annotations[UPDATED_AT_ANNOTATION] = version.made_at or created_at(agent)
    meta.update(generation=version.version, annotations=annotations)
    return {**agent, "metadata": meta, "spec": version.spec}


def session_agent_view(obj: dict[str, Any] | None, name: str) -> views.SessionAgent:
    """The `agent` of a session: ``obj``, the Agent at the version the session runs (see
    `version_object`). An Agent that is gone shows as an empty stand-in named ``name``."""
    if obj is None:
        return views.SessionAgent(
            id="",
            version=0,
            name=name,
            description=None,
            model=views.ModelConfig(id=""),
            system=None,
            tools=[],
            mcp_servers=[],
        )
    return views.SessionAgent(**_agent_fields(obj))
