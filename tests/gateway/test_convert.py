"""Pure mappings between Managed Agents JSON and the resources, and list pagination."""

from __future__ import annotations

import re
from typing import Any

import pytest

from paddock.gateway.convert import meta
from paddock.gateway.convert.agents import agent_spec_fields, agent_view
from paddock.gateway.convert.environments import environment_spec
from paddock.gateway.errors import ApiError
from paddock.gateway.pages import paginate
from paddock.gateway.params import AgentCreateParams, CloudConfigParam


def fields(**body: Any) -> dict[str, Any]:
    return agent_spec_fields(
        AgentCreateParams.model_validate({"name": "a", "model": "claude-sonnet-4-6", **body})
    )


def stored_agent(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "a-x1y2z",
            "generation": 3,
            "creationTimestamp": "2026-04-08T12:00:00Z",
            "labels": {meta.AGENT_ID_LABEL: "agent_1"},
            **metadata,
        },
        "spec": {"credentials": {"anthropicApiKey": {"name": "s", "key": "k"}}, **spec},
    }


def test_object_names_are_dns_labels_with_a_suffix() -> None:
    for text, start in [
        ("Coding Assistant", "coding-assistant-"),
        ("ünïcode!", "n-code-"),
        ("???", "agent-"),
    ]:
        name = meta.object_name(text, "agent")
        assert name.startswith(start)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert len(meta.object_name("x" * 300, "agent")) <= 46
    assert meta.session_object_name("sesn_0AbC") == "sesn-0abc"


def test_toolset_configs_and_policies() -> None:
    builtin = fields(
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
                "configs": [
                    {"name": "read", "permission_policy": {"type": "always_allow"}},
                    {"name": "bash", "enabled": False},
                ],
            }
        ]
    )["tools"]["builtin"]
    assert builtin == {
        "enabled": True,
        "permissionPolicy": "always_ask",
        "configs": [
            {"name": "read", "permissionPolicy": "always_allow"},
            {"name": "bash", "enabled": False},
        ],
    }
    assert fields()["tools"]["builtin"] == {"enabled": False}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tools": [{"type": "agent_toolset_20260401"}] * 2}, "at most one"),
        (
            {"tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "web_search"}]}]},
            "web_search",
        ),
        (
            {
                "tools": [
                    {
                        "type": "agent_toolset_20260401",
                        "configs": [{"name": "bash"}, {"name": "bash"}],
                    }
                ]
            },
            "twice",
        ),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}]}, "no mcp_servers entry"),
        ({"mcp_servers": [{"type": "url", "name": "x", "url": "https://x"}]}, "not used"),
        (
            {
                "tools": [
                    {
                        "type": "mcp_toolset",
                        "mcp_server_name": "x",
                        "configs": [{"name": "t"}, {"name": "t", "enabled": False}],
                    }
                ],
                "mcp_servers": [{"type": "url", "name": "x", "url": "https://x"}],
            },
            "twice",
        ),
        (
            {
                "tools": [
                    {
                        "type": "mcp_toolset",
                        "mcp_server_name": "x",
                        "configs": [{"name": "t", "permission_policy": {"type": "auto"}}],
                    }
                ],
                "mcp_servers": [{"type": "url", "name": "x", "url": "https://x"}],
            },
            "auto",
        ),
        (
            {
                "tools": [
                    {
                        "type": "custom",
                        "name": "bash",
                        "description": "d",
                        "input_schema": {"type": "object"},
                    }
                ]
            },
            "shadows",
        ),
        ({"execution_identity": {"type": "aws_role", "role_arn": "x"}}, "aws_role"),
        ({"model": {"id": "claude-sonnet-4-6", "effort": "high"}}, "effort"),
    ],
)
def test_what_paddock_cannot_do_is_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        fields(**body)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_an_agent_view_parses_back_into_the_same_spec() -> None:
    body = {
        "name": "a",
        "model": "claude-sonnet-4-6",
        "system": "s",
        "tools": [
            {"type": "agent_toolset_20260401", "configs": [{"name": "grep", "enabled": False}]},
            {
                "type": "mcp_toolset",
                "mcp_server_name": "docs",
                "default_config": {"enabled": False},
                "configs": [
                    {"name": "search", "enabled": True},
                    {"name": "write", "permission_policy": {"type": "always_allow"}},
                ],
            },
            {
                "type": "custom",
                "name": "t",
                "description": "d",
                "input_schema": {"type": "object", "x-extra": [1]},
            },
        ],
        "mcp_servers": [{"type": "url", "name": "docs", "url": "https://docs.example"}],
    }
    spec = agent_spec_fields(AgentCreateParams.model_validate(body))
    view = agent_view(stored_agent(spec)).model_dump(mode="json")
    assert view["version"] == 3
    assert view["name"] == "a-x1y2z"  # no name annotation: the Kubernetes name
    assert view["tools"][2]["input_schema"] == {"type": "object", "x-extra": [1]}
    assert view["tools"][1] == {
        "type": "mcp_toolset",
        "mcp_server_name": "docs",
        "default_config": {"enabled": False, "permission_policy": {"type": "always_ask"}},
        "configs": [
            {"name": "search", "enabled": True, "permission_policy": {"type": "always_ask"}},
            {"name": "write", "enabled": False, "permission_policy": {"type": "always_allow"}},
        ],
    }
    # What an update does with the fields it is not given: the same agent comes out.
    again = {k: view[k] for k in ("name", "model", "system", "tools", "mcp_servers")}
    spec_again = agent_spec_fields(AgentCreateParams.model_validate(again))
    assert agent_view(stored_agent(spec_again)).model_dump(mode="json") == view


def test_environment_networking_and_packages() -> None:
    def spec(config: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        return environment_spec(
            CloudConfigParam.model_validate({"type": "cloud", **config}), current or {}
        )

    assert spec({"networking": {"type": "unrestricted"}}) == {"networking": {"mode": "open"}}
    limited = spec({"networking": {"type": "limited", "allowed_hosts": ["a.example"]}})
    assert limited["networking"] == {
        "mode": "limited",
        "allowedDomains": ["a.example"],
        "allowPackageManagers": False,
    }
    # Omitted parts of the config keep their value.
    assert spec({"packages": {"pip": ["x"]}}, {"networking": {"mode": "open"}}) == {
        "networking": {"mode": "open"},
        "packages": {"pip": ["x"]},
    }
    for config, message in [
        ({"packages": {"pip": ["x"]}}, "allow_package_managers"),
        ({"packages": {"cargo": ["x"]}, "networking": {"type": "unrestricted"}}, "cargo"),
        ({"networking": {"type": "limited", "allow_mcp_servers": True}}, "allow_mcp_servers"),
    ]:
        with pytest.raises(ApiError, match=message):
            spec(config)


def test_metadata_patches() -> None:
    assert meta.patched_metadata({"a": "1", "b": "2"}, {"a": None, "c": "3"}) == {
        "b": "2",
        "c": "3",
    }
    assert meta.patched_metadata({"a": "1"}, {"a": ""}, empty_deletes=True) == {}
    with pytest.raises(ApiError, match="16"):
        meta.patched_metadata({str(i): "v" for i in range(16)}, {"x": "y"})


def test_pages_walk_both_ways_without_repeats() -> None:
    items = [(f"2026-01-0{1 + i // 3}", f"id{i}") for i in range(8)]
    for order in ("asc", "desc"):
        seen: list[tuple[str, str]] = []
        page = paginate(items, lambda item: item, limit=3, order=order, page=None)
        pages = [page]
        while page.next_page:
            page = paginate(items, lambda item: item, limit=3, order=order, page=page.next_page)
            pages.append(page)
        for one in pages:
            seen += one.data
        assert seen == sorted(items, reverse=order == "desc")
        back = paginate(items, lambda item: item, limit=3, order=order, page=pages[-1].prev_page)
        assert back.data == pages[-2].data
        # Items created after the cursor was handed out do not shift the next page.
        more = [*items, ("2025-12-31", "early"), ("2027-01-01", "late")]
        after = paginate(more, lambda item: item, limit=3, order=order, page=pages[0].next_page)
        assert after.data == pages[1].data
    ascending = paginate(items, lambda item: item, limit=3, order="asc", page=None)
    with pytest.raises(ApiError, match="order=asc"):
        paginate(items, lambda item: item, limit=3, order="desc", page=ascending.next_page)
    with pytest.raises(ApiError):
        paginate(items, lambda item: item, limit=3, order="asc", page="!!")
