"""How events look in the terminal, without a server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from paddock.cli.render import Renderer, age, document, folded, listing, table, tool_call
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


NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def test_ages_read_like_kubectl() -> None:
    assert age("2026-05-01T11:59:18Z", NOW) == "42s"
    assert age("2026-05-01T11:55:00.5+00:00", NOW) == "4m"
    assert age("2026-04-29T09:00:00Z", NOW) == "2d"
    assert age("2026-05-01T12:00:09Z", NOW) == "0s"  # a clock ahead is not negative
    assert age(None, NOW) == ""


def test_tables_align_their_columns() -> None:
    assert table(["ID", "NAME"], [["agent_1", "a"], ["x", "longer name"]]) == [
        "ID       NAME",
        "agent_1  a",
        "x        longer name",
    ]
    assert table(["ID", "AGE"], []) == ["ID  AGE"]


def test_each_kind_has_its_columns() -> None:
    agent = {
        "id": "agent_1",
        "name": "Coder",
        "model": {"id": "claude-sonnet-4-6", "speed": "standard"},
        "version": 3,
        "system": "Line one\nline two",
        "created_at": "2026-05-01T11:00:00Z",
        "updated_at": "2026-05-01T11:58:00Z",
    }
    assert listing("agent", [agent], NOW) == [
        "ID       NAME   MODEL              VERSION  AGE",
        "agent_1  Coder  claude-sonnet-4-6  3        1h",
    ]
    assert listing("version", [agent], NOW)[1] == (
        "3        Coder  claude-sonnet-4-6  Line one line two  2m"
    )
    environment = {
        "id": "env_1",
        "name": "py",
        "config": {"type": "cloud", "networking": {"type": "limited"}},
        "created_at": "2026-05-01T11:59:00Z",
    }
    assert listing("environment", [environment], NOW)[1] == "env_1  py    limited     1m"
    session = {
        "id": "sesn_1",
        "status": "idle",
        "agent": {"name": "Coder"},
        "title": None,
        "created_at": "2026-05-01T12:00:00Z",
    }
    assert listing("session", [session], NOW)[1] == "sesn_1  idle    Coder         0s"


def test_documents_for_scripts() -> None:
    data = [{"id": "agent_1", "name": "Café", "tools": []}]
    assert json.loads(document(data, "json")) == data
    assert "Café" in document(data, "json")
    assert document(data, "yaml") == "- id: agent_1\n  name: Café\n  tools: []"


def test_outcome_verdicts_show_one_line_per_evaluation() -> None:
    lines = render(
        {
            "type": "user.define_outcome",
            "description": "A poem",
            "rubric": {"type": "text", "content": "four lines"},
            "max_iterations": 2,
            "outcome_id": "outc_1",
        },
        {"type": "span.outcome_evaluation_start", "outcome_id": "outc_1", "iteration": 0},
        {"type": "span.outcome_evaluation_ongoing", "outcome_id": "outc_1", "iteration": 0},
        {
            "type": "span.outcome_evaluation_end",
            "outcome_id": "outc_1",
            "iteration": 0,
            "result": "needs_revision",
            "explanation": "Add\na title.",
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
        {
            "type": "span.outcome_evaluation_end",
            "outcome_id": "outc_1",
            "iteration": 1,
            "result": "max_iterations_reached",
            "explanation": "",
        },
    )
    assert lines == [
        "◎ outcome: A poem (graded, up to 2 evaluations)",
        "◎ grading (evaluation 1)",
        "◎ evaluation 1: needs_revision — Add a title.",
        "◎ evaluation 2: max_iterations_reached",
    ]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _start(event_id: str) -> dict[str, Any]:
    return {"type": "event_start", "event": {"type": "agent.message", "id": event_id}}


def _delta(event_id: str, text: str, index: int = 0) -> dict[str, Any]:
    return {
        "type": "event_delta",
        "event_id": event_id,
        "delta": {
            "type": "content_delta",
            "index": index,
            "content": {"type": "text", "text": text},
        },
    }


def _message(event_id: str, *texts: str) -> dict[str, Any]:
    return {
        "type": "agent.message",
        "id": event_id,
        "content": [{"type": "text", "text": text} for text in texts],
    }


def test_previews_print_whole_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    renderer = Renderer(Terminal(out, io.StringIO()))
    renderer.show(_start("sevt_1"))
    renderer.show(_delta("sevt_1", "First li"))
    assert out.getvalue() == ""  # half a line waits for the rest
    renderer.show(_delta("sevt_1", "ne.\nSecond"))
    assert out.getvalue() == "First line.\n"
    renderer.show(_delta("sevt_1", " line"))
    renderer.show(_message("sevt_1", "First line.\nSecond line."))
    renderer.show({"type": "span.model_request_end"})
    # The same lines as the message alone: stable for scripts.
    assert out.getvalue() == "First line.\nSecond line.\n"
    assert out.getvalue().splitlines() == render(_message("sevt_1", "First line.\nSecond line."))


def test_previews_are_typed_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    renderer = Renderer(Terminal(out, io.StringIO()))
    renderer.show(_start("sevt_1"))
    renderer.show(_delta("sevt_1", "Typing"))
    assert out.getvalue() == "Typing"
    renderer.show(_delta("sevt_1", " as it"))
    assert out.getvalue() == "Typing as it"
    # Shed deltas: the message brings the rest, and only the rest.
    renderer.show(_message("sevt_1", "Typing as it comes.", "A second block."))
    assert out.getvalue() == "Typing as it comes.\nA second block.\n"
    # A line printed meanwhile ends the typed one first.
    renderer.show(_start("sevt_2"))
    renderer.show(_delta("sevt_2", "Half"))
    renderer.show({"type": "session.status_rescheduled"})
    assert out.getvalue().endswith("Half\n↻ rescheduling\n")


def test_a_preview_without_its_message_is_marked_cut_off() -> None:
    lines = render(
        _start("sevt_1"),
        _delta("sevt_1", "Line one.\nAnd then"),
        {"type": "user.interrupt"},
        {"type": "span.model_request_end"},
    )
    assert lines == ["Line one.", "⏹ interrupted", "And then", "  ⋯ cut off"]


def test_a_message_stored_under_another_id_continues_its_preview() -> None:
    lines = render(
        _start("sevt_reserved"),
        _delta("sevt_reserved", "Once\nupon"),
        _message("sevt_other", "Once\nupon a time."),
        {"type": "span.model_request_end"},
    )
    assert lines == ["Once", "upon a time."]


def test_previews_of_other_types_and_without_messages() -> None:
    lines = render(
        {"type": "event_start", "event": {"type": "agent.thinking", "id": "sevt_t"}},
        {"type": "agent.thinking", "id": "sevt_t"},
        _message("sevt_m", "Never previewed."),
        _start("sevt_empty"),
        {"type": "span.model_request_end"},
    )
    assert lines == ["Never previewed."]  # an empty preview leaves no mark


def test_threads_are_indented_under_their_agent() -> None:
    primary, one, two, deep = "sthr_primary", "sthr_one", "sthr_two", "sthr_deep"

    def text(value: str) -> list[dict[str, Any]]:
        return [{"type": "text", "text": value}]

    lines = render(
        {"type": "user.message", "content": text("Count both folders")},
        {"type": "agent.message", "content": text("Asking two helpers.")},
        {"type": "session.thread_created", "session_thread_id": one, "agent_name": "Counter"},
        {"type": "session.thread_created", "session_thread_id": two, "agent_name": "Lister"},
        {
            "type": "agent.thread_message_sent",
            "to_session_thread_id": one,
            "to_agent_name": "Counter",
            "content": text("Count src/"),
        },
        {
            "type": "session.thread_status_running",
            "session_thread_id": one,
            "agent_name": "Counter",
        },
        {
            "type": "agent.thread_message_received",
            "session_thread_id": one,
            "from_session_thread_id": primary,
            "content": text("Count src/"),
        },
        {
            "type": "agent.tool_use",
            "id": "sevt_9",
            "session_thread_id": one,
            "name": "bash",
            "input": {"command": "ls src | wc -l"},
            "evaluated_permission": "ask",
        },
        {
            "type": "session.thread_created",
            "session_thread_id": deep,
            "agent_name": "Helper",
            "parent_thread_id": two,
        },
        {"type": "agent.message", "session_thread_id": deep, "content": text("Deep\ndown.")},
        {
            "type": "agent.thread_message_sent",
            "session_thread_id": one,
            "to_session_thread_id": primary,
            "content": text("12 files\nin src"),
        },
        {
            "type": "session.thread_status_idle",
            "session_thread_id": one,
            "agent_name": "Counter",
            "stop_reason": {"type": "end_turn"},
        },
        {
            "type": "agent.thread_message_received",
            "from_session_thread_id": one,
            "from_agent_name": "Counter",
            "content": text("12 files\nin src"),
        },
        {
            "type": "session.thread_status_terminated",
            "session_thread_id": two,
            "agent_name": "Lister",
        },
        # A thread whose creation was not seen is shown by its id.
        {"type": "agent.message", "session_thread_id": "sthr_unseen", "content": text("Hi.")},
    )
    assert lines == [
        "> Count both folders",
        "Asking two helpers.",
        "◇ Counter (sthr_one)",
        "◇ Lister (sthr_two)",
        "→ Counter: Count src/",
        "  Counter │ ▸ running",
        "  Counter │ ← primary: Count src/",
        "  Counter │ ? bash(ls src | wc -l)",
        "  Lister │ ◇ Helper (sthr_deep)",
        "    Helper │ Deep",
        "    Helper │ down.",
        "  Counter │ → primary: 12 files",
        "  Counter │            in src",
        "  Counter │ — idle: end_turn",
        "← Counter: 12 files",
        "           in src",
        "  Lister │ ■ thread terminated",
        "  sthr_unseen │ Hi.",
    ]
