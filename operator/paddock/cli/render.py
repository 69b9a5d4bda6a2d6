"""Session events as readable terminal lines, and resources as tables or documents.

Messages are printed whole, tool calls as one `● tool(argument)` line, their results folded
to a few lines, and model requests as a spinner. Agents, environments and sessions are
aligned tables (as `kubectl get`) or JSON/YAML documents. Events and resources are plain
dicts (the SDK's `to_dict(mode="json")`), so the rendering is tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import yaml

from paddock.cli.terminal import Terminal

RESULT_LINES = 4
"""Lines of a tool result shown before folding."""

# The argument worth showing for each built-in tool.
_ARGUMENT = {
    "bash": "command",
    "read": "file_path",
    "write": "file_path",
    "edit": "file_path",
    "glob": "pattern",
    "grep": "pattern",
}
_TOOL_USES = ("agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use")
_TOOL_RESULTS = ("agent.tool_result", "agent.mcp_tool_result")


def text_of(blocks: list[dict[str, Any]] | None) -> str:
    """The text of content blocks; other blocks as `[image]`, `[document]`, ..."""
    parts = []
    for block in blocks or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        else:
            parts.append(f"[{block.get('type', 'block')}]")
    return "\n".join(parts)


def shorten(text: str, width: int) -> str:
    text = text.replace("\t", "    ")
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def tool_call(event: dict[str, Any]) -> str:
    """`name(argument)`: the command, path or pattern of built-in tools, else compact JSON."""
    name = event.get("name", "?")
    tool_input = event.get("input") or {}
    key = _ARGUMENT.get(name)
    if key and isinstance(tool_input.get(key), str):
        argument = tool_input[key].strip().replace("\n", " ⏎ ")
    else:
        argument = json.dumps(tool_input, separators=(",", ":"), ensure_ascii=False)
    if event.get("type") == "agent.mcp_tool_use":
        name = f"{event.get('mcp_server_name')}.{name}"
    return f"{name}({argument})"


def folded(text: str, width: int, lines: int = RESULT_LINES) -> list[str]:
    """The first ``lines`` lines of ``text``, each cut to ``width``, and a count of the rest."""
    rows = text.rstrip("\n").splitlines() or ["(no output)"]
    shown = [shorten(row, width) for row in rows[:lines]]
    if len(rows) > lines:
        shown.append(f"… +{len(rows) - lines} lines")
    return shown


_VERDICT_COLORS = {"satisfied": "green", "needs_revision": "yellow", "failed": "red"}


class Renderer:
    """Prints events as they arrive and keeps what a prompt or summary needs."""

    def __init__(self, terminal: Terminal) -> None:
        self.term = terminal
        self.tool_uses: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def show(self, event: dict[str, Any]) -> None:
        term, kind = self.term, event.get("type", "")
        if kind == "user.message":
            term.line(
                term.style("> ", "bold", "cyan") + term.style(text_of(event.get("content")), "bold")
            )
        elif kind == "user.interrupt":
            term.line(term.style("⏹ interrupted", "yellow"))
        elif kind == "user.tool_confirmation":
            if event.get("result") == "allow":
                term.line(term.style("  ✓ allowed", "green"))
            else:
                reason = event.get("deny_message")
                term.line(term.style("  ✗ denied" + (f": {reason}" if reason else ""), "red"))
        elif kind == "user.custom_tool_result":
            term.line(term.style("  ⎿ result sent", "dim"))
        elif kind == "agent.message":
            term.busy(None)
            term.line(text_of(event.get("content")))
        elif kind == "agent.thinking":
            term.busy("thinking")
        elif kind in _TOOL_USES:
            self.tool_uses[event.get("id", "")] = event
            marker = "?" if event.get("evaluated_permission") == "ask" else "●"
            if kind == "agent.custom_tool_use":
                marker = "◆"
            term.line(term.style(marker + " ", "cyan") + shorten(tool_call(event), term.width - 2))
        elif kind in _TOOL_RESULTS:
            self._result(event)
        elif kind == "session.status_running":
            term.busy("working")
        elif kind == "span.model_request_start":
            self.requests += 1
            term.busy("waiting for the model")
        elif kind == "span.model_request_end":
            usage = event.get("model_usage") or {}
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
            term.busy("working")
        elif kind == "session.error":
            error = event.get("error") or {}
            retry = (error.get("retry_status") or {}).get("type", "")
            term.line(
                term.style(f"! {error.get('type')}: {error.get('message')} ({retry})", "yellow")
            )
        elif kind == "user.define_outcome":
            limit = event.get("max_iterations") or 3
            term.line(
                term.style("◎ outcome: ", "bold", "cyan")
                + term.style(str(event.get("description", "")), "bold")
                + term.style(f" (graded, up to {limit} evaluations)", "dim")
            )
        elif kind in ("span.outcome_evaluation_start", "span.outcome_evaluation_ongoing"):
            term.busy("grading")
        elif kind == "span.outcome_evaluation_end":
            usage = event.get("usage") or {}
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
            term.busy(None)
            result = str(event.get("result", ""))
            color = _VERDICT_COLORS.get(result, "yellow")
            explanation = " ".join(str(event.get("explanation") or "").split())
            line = f"◎ evaluation {int(event.get('iteration') or 0) + 1}: {result}"
            term.line(
                term.style(line, "bold", color)
                + (
                    " — " + shorten(explanation, max(term.width - len(line) - 3, 10))
                    if explanation
                    else ""
                )
            )
        elif kind == "session.status_rescheduled":
            term.line(term.style("↻ rescheduling", "yellow"))
        elif kind == "session.status_idle":
            term.busy(None)
        elif kind in ("session.status_terminated", "session.deleted"):
            term.busy(None)
            term.line(
                term.style(f"■ session {kind.rsplit('.', 1)[-1].removeprefix('status_')}", "red")
            )

    def _result(self, event: dict[str, Any]) -> None:
        term = self.term
        error = bool(event.get("is_error"))
        rows = folded(text_of(event.get("content")), term.width - 6)
        for index, row in enumerate(rows):
            prefix = "  ⎿ " if index == 0 else "    "
            term.line(term.style(prefix + row, "red" if error else "dim"))

    def summary(self, stop_reason: str, seconds: float) -> str:
        return (
            f"{stop_reason} · {self.requests} model request{'s' * (self.requests != 1)} · "
            f"{self.input_tokens:,} in / {self.output_tokens:,} out tokens · {seconds:.1f}s"
        )


OUTPUTS = ("table", "json", "yaml")
"""The `-o` forms: a table for people, JSON or YAML (the API's objects) for scripts."""


def document(data: Any, output: str) -> str:
    """``data`` as a JSON or YAML document."""
    if output == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


def age(moment: str | None, now: float) -> str:
    """How long ago ``moment`` (RFC 3339) was, as kubectl says it: `42s`, `5m`, `3h`, `2d`."""
    if not moment:
        return ""
    seconds = max(int(now - datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, header first; no trailing blanks."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _networking(environment: dict[str, Any]) -> str:
    return str(((environment.get("config") or {}).get("networking") or {}).get("type", ""))


Row = Callable[[dict[str, Any], float], list[str]]
COLUMNS: dict[str, tuple[list[str], Row]] = {
    "agent": (
        ["ID", "NAME", "MODEL", "VERSION", "AGE"],
        lambda a, now: [
            a["id"],
            a["name"],
            a["model"]["id"],
            str(a["version"]),
            age(a["created_at"], now),
        ],
    ),
    # A version's age is when it was made: its `updated_at`.
    "version": (
        ["VERSION", "NAME", "MODEL", "SYSTEM", "AGE"],
        lambda a, now: [
            str(a["version"]),
            a["name"],
            a["model"]["id"],
            shorten((a.get("system") or "").replace("\n", " "), 40),
            age(a["updated_at"], now),
        ],
    ),
    "environment": (
        ["ID", "NAME", "NETWORKING", "AGE"],
        lambda e, now: [e["id"], e["name"], _networking(e), age(e["created_at"], now)],
    ),
    "session": (
        ["ID", "STATUS", "AGENT", "TITLE", "AGE"],
        lambda s, now: [
            s["id"],
            s["status"],
            s["agent"]["name"],
            shorten(s.get("title") or "", 40),
            age(s["created_at"], now),
        ],
    ),
}
"""The table of each kind of object: its header and the cells of one object."""


def listing(kind: str, items: list[dict[str, Any]], now: float) -> list[str]:
    """The table of ``items``, objects of ``kind`` (a key of `COLUMNS`)."""
    header, row = COLUMNS[kind]
    return table(header, [row(item, now) for item in items])
