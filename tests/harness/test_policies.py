"""Which tools the model is offered, how each call is handled, and what it costs."""

from __future__ import annotations

from paddock.harness import ToolPolicy, toolbox
from paddock.models import list_cost_cents, price

from .conftest import agent_spec


def test_builtin_defaults_allow_every_tool() -> None:
    box = toolbox(agent_spec())
    assert [d["name"] for d in box.definitions] == ["bash", "read", "write", "edit", "glob", "grep"]
    assert set(box.policies.values()) == {ToolPolicy("builtin", "allow")}


def test_per_tool_overrides_win_over_the_toolset_default() -> None:
    box = toolbox(
        agent_spec(
            tools={
                "builtin": {
                    "permissionPolicy": "always_ask",
                    "configs": [
                        {"name": "read", "permissionPolicy": "always_allow"},
                        {"name": "bash", "enabled": False},
                    ],
                }
            }
        )
    )
    assert "bash" not in box.policies
    assert box.policy("read") == ToolPolicy("builtin", "allow")
    assert box.policy("write") == ToolPolicy("builtin", "ask")


def test_allow_listing_by_disabling_the_default() -> None:
    box = toolbox(
        agent_spec(
            tools={"builtin": {"enabled": False, "configs": [{"name": "grep", "enabled": True}]}}
        )
    )
    assert [d["name"] for d in box.definitions] == ["grep"]


def test_custom_tools_are_offered_with_their_schema() -> None:
    custom = {
        "name": "deploy",
        "description": "Deploy",
        "inputSchema": {"type": "object", "required": ["env"]},
    }
    box = toolbox(agent_spec(tools={"custom": [custom]}))
    assert box.definitions[-1] == {
        "name": "deploy",
        "description": "Deploy",
        "input_schema": {"type": "object", "required": ["env"]},
    }
    assert box.policy("deploy") == ToolPolicy("custom", "allow")


def test_list_cost_in_cents_rounds_up() -> None:
    assert price("claude-sonnet-4-6") == (3.0, 15.0)
    assert price("claude-sonnet-4-5-20250929") == (3.0, 15.0)
    # 1M input at $3 + 100k output at $15 = $4.50
    assert (
        list_cost_cents("claude-sonnet-4-6", {"input_tokens": 1_000_000, "output_tokens": 100_000})
        == 450
    )
    assert list_cost_cents("claude-haiku-4-5", {"input_tokens": 1}) == 1
    assert list_cost_cents("claude-sonnet-4-6", {"cache_read_input_tokens": 1_000_000}) == 30


def test_a_model_without_a_price_has_no_cost() -> None:
    assert price("my-finetune") is None
    assert list_cost_cents("my-finetune", {"input_tokens": 10}) is None


def test_mcp_tools_get_prefixed_names_toolset_policies_and_never_shadow_the_agents_own() -> None:
    custom = {"name": "mcp__docs__echo", "description": "d", "inputSchema": {"type": "object"}}
    spec = agent_spec(
        mcpServers=[{"name": "docs", "url": "https://mcp.example/mcp"}],
        tools={
            "custom": [custom],
            "mcp": [
                {
                    "serverName": "docs",
                    "configs": [
                        {"name": "add", "permissionPolicy": "always_allow"},
                        {"name": "drop", "enabled": False},
                    ],
                }
            ],
        },
    )
    listed = [
        {"name": name, "description": name, "input_schema": {"type": "object"}}
        for name in ("echo", "add", "drop", "x" * 130)
    ]
    box = toolbox(spec).with_mcp(spec.tools.mcp[0], listed)
    assert box.policy("mcp__docs__add") == ToolPolicy("mcp", "allow", "docs", "add")
    assert "mcp__docs__drop" not in box.policies  # enabled: false hides it
    assert box.policy("mcp__docs__echo") == ToolPolicy("custom", "allow")  # the custom tool wins
    assert box.skipped == ["mcp__docs__echo", "mcp__docs__" + "x" * 130]
    assert [d["name"] for d in box.definitions][-1] == "mcp__docs__add"
