"""The tools the model is offered, and the policy that applies to each call."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from paddock.models import BUILTIN_TOOL_NAMES, AgentSpec, BuiltinToolConfig, McpToolset

_PATH = {"type": "string", "description": "Absolute path, or relative to the working directory."}
BUILTIN_TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "bash": {
        "description": "Run a bash command in the sandbox's working directory. Output is capped; "
        "long-running commands are killed at the timeout.",
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run."},
                "timeout_ms": {"type": "integer", "description": "Timeout in milliseconds."},
                "restart": {"type": "boolean", "description": "Restart the shell session."},
            },
        },
    },
    "read": {
        "description": "Read a text file; returns numbered lines.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": _PATH,
                "view_range": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "[first, last] line, 1-based inclusive; last <= 0 means the end.",
                },
            },
            "required": ["file_path"],
        },
    },
    "write": {
        "description": "Create or overwrite a file.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": _PATH, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    },
    "edit": {
        "description": "Replace an exact string in a file. The old string must occur exactly once "
        "unless replace_all is true.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": _PATH,
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean"},
            },
            "required": ["file_path", "old_string", "new_string"],
        },
    },
    "glob": {
        "description": "Find files by glob pattern (** matches directories); newest first.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": _PATH},
            "required": ["pattern"],
        },
    },
    "grep": {
        "description": "Search file contents with a regular expression.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "path": _PATH,
                "glob": {"type": "string", "description": "Only files matching this glob."},
            },
            "required": ["pattern"],
        },
    },
}
assert set(BUILTIN_TOOL_SCHEMAS) == set(BUILTIN_TOOL_NAMES)

# A coordinator's delegation tools (Agent `multiagent`), run by paddock.harness.threads.
DELEGATION_TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "list_agents": {
        "description": "List the agents you may delegate work to with send_to_agent.",
        "input_schema": {"type": "object", "properties": {}},
    },
    "send_to_agent": {
        "description": "Send a message to another agent and wait for its reply. Each call "
        "starts a new thread of that agent unless session_thread_id names one it started "
        "before; calls made in one turn run in parallel.",
        "input_schema": {
            "type": "object",
            "properties": {
                "agent": {"type": "string", "description": "The agent's name (list_agents)."},
                "message": {"type": "string", "description": "What to ask of it."},
                "session_thread_id": {
                    "type": "string",
                    "description": "A thread to message again (from an earlier reply).",
                },
            },
            "required": ["agent", "message"],
        },
    },
}

# Tools without side effects: a call interrupted by a crash may simply run again.
READ_ONLY_TOOLS = frozenset({"read", "glob", "grep"})

ToolKind = Literal["builtin", "custom", "mcp", "delegate"]
MCP_TOOL_PREFIX = "mcp__"
_NOT_IN_TOOL_NAMES = re.compile(r"[^A-Za-z0-9_-]")


def mcp_tool_name(server: str, tool: str) -> str:
    """The name the model calls an MCP tool by: `mcp__<server>__<tool>`, with every character
    the Messages API refuses in a tool name made `_` (what Claude Code and the Agent SDK
    name MCP tools; the events carry server and tool name apart). Built-in names never
    start with `mcp__`; see `with_mcp` for custom tools that do."""
    return _NOT_IN_TOOL_NAMES.sub("_", f"{MCP_TOOL_PREFIX}{server}__{tool}")


@dataclass(frozen=True)
class ToolPolicy:
    kind: ToolKind
    permission: Literal["allow", "ask"]
    mcp_server: str | None = None
    """For an MCP tool: the Agent's name of its server."""
    mcp_tool: str | None = None
    """For an MCP tool: its name as the server lists it."""


@dataclass(frozen=True)
class Toolbox:
    """What the model may call and how each call is handled."""

    definitions: list[dict[str, Any]]
    policies: dict[str, ToolPolicy]
    skipped: list[str] = field(default_factory=list)
    """MCP tools not offered because their model name is too long or taken."""

    def policy(self, name: str) -> ToolPolicy | None:
        return self.policies.get(name)

    def with_mcp(self, toolset: McpToolset, tools: list[dict[str, Any]]) -> Toolbox:
        """This toolbox plus the tools one MCP server lists (``name``, ``description``,
        ``input_schema``), as ``toolset`` configures them: `enabled: false` hides a tool,
        per-tool policies win over the toolset's. A tool whose model name is over 128
        characters or already taken (by a built-in, a custom tool or another MCP tool) is
        not offered: what the Agent names itself always wins."""
        definitions, policies = list(self.definitions), dict(self.policies)
        skipped = list(self.skipped)
        configs = {config.name: config for config in toolset.configs}
        for tool in tools:
            config = configs.get(tool["name"])
            enabled = (
                toolset.enabled if config is None or config.enabled is None else config.enabled
            )
            if not enabled:
                continue
            name = mcp_tool_name(toolset.server_name, tool["name"])
            if len(name) > 128 or name in policies:
                skipped.append(name)
                continue
            policy = (config and config.permission_policy) or toolset.permission_policy
            definitions.append(
                {
                    "name": name,
                    "description": tool.get("description") or "",
                    "input_schema": tool.get("input_schema") or {"type": "object"},
                }
            )
            policies[name] = ToolPolicy(
                "mcp",
                "ask" if policy == "always_ask" else "allow",
                mcp_server=toolset.server_name,
                mcp_tool=tool["name"],
            )
        return Toolbox(definitions, policies, skipped)


def toolbox(spec: AgentSpec) -> Toolbox:
    """Tool definitions for the Messages API and the policy of each tool, from the Agent."""
    builtin = spec.tools.builtin
    overrides: dict[str, BuiltinToolConfig] = {c.name: c for c in builtin.configs}
    definitions: list[dict[str, Any]] = []
    policies: dict[str, ToolPolicy] = {}
    for name, schema in BUILTIN_TOOL_SCHEMAS.items():
        override = overrides.get(name)
        enabled = (
            builtin.enabled if override is None or override.enabled is None else override.enabled
        )
        if not enabled:
            continue
        policy = (override and override.permission_policy) or builtin.permission_policy
        definitions.append({"name": name, **schema})
        policies[name] = ToolPolicy("builtin", "ask" if policy == "always_ask" else "allow")
    for tool in spec.tools.custom:
        definitions.append(
            {
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema.model_dump(mode="json", exclude_none=True),
            }
        )
        policies[tool.name] = ToolPolicy("custom", "allow")
    if spec.multiagent is not None:
        # A coordinator's delegation tools (paddock.harness.threads), run by the harness.
        for name, schema in DELEGATION_TOOL_SCHEMAS.items():
            definitions.append({"name": name, **schema})
            policies[name] = ToolPolicy("delegate", "allow")
    return Toolbox(definitions, policies)
