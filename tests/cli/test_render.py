"""How events look in the terminal, without a server."""

from __future__ import annotations

import io

from paddock.cli.render import Renderer, folded, tool_call
from paddock.cli.terminal import Terminal


def render(*events: dict) -> list[str]:
    out = io.StringIO()
    renderer = Renderer(Terminal(out, io.StringIO()))
    for event in events:
        renderer.show(event)
    return out.getvalue().splitlines()


def test_tool_calls_show_their_argument() -> None:
    assert tool_call({"name": "bash", "input": {"command": "ls -la\npwd"}}) == "bash(ls -la ⏎ pwd)"
    assert tool_call({"name": "read", "input": {"file_path": "a.txt"}}) == "read(a.txt)"
    assert tool_call({"name": "lookup", "input": {"id": 4}}) == 'lookup({"id":4})'
    mcp = {"type": "agent.mcp_tool_use", "mcp_server_name": "docs", "name": "search", "input": {}}
    assert tool_call(mcp) == "docs.search({})"


def test_results_fold_after_four_lines() -> None:
    assert folded("a\nb", 80) == ["a", "b"]
    assert folded("", 80) == ["(no output)"]
    assert folded("\n".join("x" * 200 for _ in range(6)), 10) == ["x" * 9 + "…"] * 4 + [
        "… +2 lines"
    ]


def test_a_turn_reads_like_a_conversation() -> None:
    lines = render(
        {"type": "user.message", "content": [{"type": "text", "text": "list files"}]},
        {"type": "session.status_running"},
        {"type": "agent.message", "content": [{"type": "text", "text": "Sure."}]},
        {
            "type": "agent.tool_use",
            "id": "sevt_1",
            "name": "bash",
            "input": {"command": "ls"},
            "evaluated_permission": "ask",
        },
        {
            "type": "user.tool_confirmation",
            "tool_use_id": "sevt_1",
            "result": "deny",
            "deny_message": "no",
        },
        {
            "type": "agent.tool_result",
            "tool_use_id": "sevt_1",
            "is_error": True,
            "content": [{"type": "text", "text": "denied"}],
        },
        {
            "type": "agent.custom_tool_use",
            "id": "sevt_2",
            "name": "deploy",
            "input": {"env": "prod"},
        },
        {
            "type": "session.error",
            "error": {
                "type": "model_overloaded_error",
                "message": "busy",
                "retry_status": {"type": "retrying"},
            },
        },
        {"type": "session.status_terminated"},
    )
    assert lines == [
        "> list files",
        "Sure.",
        "? bash(ls)",
        "  ✗ denied: no",
        "  ⎿ denied",
        '◆ deploy({"env":"prod"})',
        "! model_overloaded_error: busy (retrying)",
        "■ session terminated",
    ]


def test_usage_is_summed_for_the_summary() -> None:
    out = io.StringIO()
    renderer = Renderer(Terminal(out, io.StringIO()))
    for tokens in (1200, 300):
        renderer.show({"type": "span.model_request_start"})
        renderer.show(
            {
                "type": "span.model_request_end",
                "model_usage": {"input_tokens": tokens, "output_tokens": 7},
            }
        )
    assert (
        renderer.summary("end_turn", 2.25)
        == "end_turn · 2 model requests · 1,500 in / 14 out tokens · 2.2s"
    )
