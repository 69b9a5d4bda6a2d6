"""Session events as readable terminal lines, and resources as tables or documents.

Messages are printed whole (or as they are typed, from previews), tool calls as one
`● tool(argument)` line, their results folded to a few lines, model requests as a spinner,
and the events of sub-agents' threads indented under their agent's name. Agents, environments and sessions are
aligned tables (as `kubectl get`) or JSON/YAML documents. Events and resources are plain
dicts (the SDK's `to_dict(mode="json")`), so the rendering is tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
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
_THREAD_STATUS = {
    "session.thread_status_running": ("▸ running", "dim"),
    "session.thread_status_rescheduled": ("↻ rescheduling", "yellow"),
    "session.thread_status_terminated": ("■ thread terminated", "red"),
}
PREVIEWED = ("agent.message", "agent.thinking")
"""The types `logs -f` and `run` ask the stream to preview (`event_deltas[]`)."""


def preview_of(event: dict[str, Any]) -> str | None:
    """The id of the event an `event_start` or `event_delta` previews; None for an event."""
    if event.get("type") == "event_start":
        return str((event.get("event") or {}).get("id", ""))
    if event.get("type") == "event_delta":
        return str(event.get("event_id", ""))
    return None


@dataclass
class Thread:
    name: str
    parent: str | None
    """The thread that started it; None for a child of the primary thread."""


@dataclass
class Threads:
    """The session's threads as a tree. The primary thread is the root; a thread's parent
    is the `parent_thread_id` its `session.thread_created` carries when it does, else the
    primary thread (the reference allows one level of sub-agents)."""

    primary: str | None = None
    known: dict[str, Thread] = field(default_factory=dict)

    def learn(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        thread_id = event.get("session_thread_id")
        if kind == "session.thread_created" and thread_id:
            self.known[thread_id] = Thread(
                str(event.get("agent_name") or thread_id), event.get("parent_thread_id")
            )
        elif kind.startswith("session.thread_status_") and thread_id not in self.known:
            if thread_id and event.get("agent_name"):
                self.known[thread_id] = Thread(str(event["agent_name"]), None)
        # A thread message names no agent when its other end is the primary thread.
        elif kind == "agent.thread_message_received" and not event.get("from_agent_name"):
            self.primary = event.get("from_session_thread_id") or self.primary
        elif kind == "agent.thread_message_sent" and not event.get("to_agent_name"):
            self.primary = event.get("to_session_thread_id") or self.primary

    def depth(self, thread_id: str | None) -> int:
        """0 for the primary thread, 1 for its children, ..."""
        depth, seen = 0, set()
        while thread_id and thread_id != self.primary and thread_id not in seen:
            seen.add(thread_id)
            depth += 1
            thread = self.known.get(thread_id)
            thread_id = thread.parent if thread else None
        return depth

    def name(self, thread_id: str) -> str:
        thread = self.known.get(thread_id)
        return thread.name if thread else thread_id

    def prefix(self, thread_id: str | None) -> str:
        """What each line of the thread starts with: its agent's name, indented by depth."""
        depth = self.depth(thread_id)
        if not depth or thread_id is None:
            return ""
        return "  " * depth + self.name(thread_id) + " │ "

    def home(self, event: dict[str, Any]) -> str | None:
        """The thread an event is shown under: a thread's creation under its parent."""
        thread_id = event.get("session_thread_id")
        if event.get("type") == "session.thread_created" and thread_id:
            thread = self.known.get(thread_id)
            return thread.parent if thread else None
        return thread_id


@dataclass
class Typing:
    """An agent.message being previewed: its text by content index, and how much of it
    is printed."""

    blocks: dict[int, str] = field(default_factory=dict)
    shown: str = ""

    @property
    def text(self) -> str:
        # As `text_of` joins the message's text blocks.
        return "\n".join(self.blocks[index] for index in sorted(self.blocks))


class Renderer:
    """Prints events as they arrive and keeps what a prompt or summary needs.

    Previews (`event_start`, `event_delta`) of an agent.message are printed as they arrive:
    on a terminal as typed, elsewhere one whole line at a time. When the message itself
    lands, only what the previews did not show is printed; a preview closed without its
    message (an interrupt, a model error) ends with `⋯ cut off`."""

    def __init__(self, terminal: Terminal) -> None:
        self.term = terminal
        self.tool_uses: dict[str, dict[str, Any]] = {}
        self.threads = Threads()
        self.typing: dict[str, Typing] = {}
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self._prefix = ""

    def _line(self, text: str) -> None:
        """``text``, each of its lines under the current event's thread."""
        if not self._prefix:
            self.term.line(text)
            return
        for row in text.split("\n"):
            self.term.line(self.term.style(self._prefix, "dim") + row)

    def show(self, event: dict[str, Any]) -> None:
        self.threads.learn(event)
        self._prefix = self.threads.prefix(self.threads.home(event))
        term, kind = self.term, event.get("type", "")
        if kind in ("event_start", "event_delta"):
            self._preview(event)
        elif kind == "user.message":
            self._line(
                term.style("> ", "bold", "cyan") + term.style(text_of(event.get("content")), "bold")
            )
        elif kind == "user.interrupt":
            self._line(term.style("⏹ interrupted", "yellow"))
        elif kind == "user.tool_confirmation":
            if event.get("result") == "allow":
                self._line(term.style("  ✓ allowed", "green"))
            else:
                reason = event.get("deny_message")
                self._line(term.style("  ✗ denied" + (f": {reason}" if reason else ""), "red"))
        elif kind == "user.custom_tool_result":
            self._line(term.style("  ⎿ result sent", "dim"))
        elif kind == "agent.message":
            term.busy(None)
            self._message(event)
        elif kind == "agent.thinking":
            term.busy("thinking")
        elif kind in _TOOL_USES:
            self.tool_uses[event.get("id", "")] = event
            marker = "?" if event.get("evaluated_permission") == "ask" else "●"
            if kind == "agent.custom_tool_use":
                marker = "◆"
            width = term.width - 2 - len(self._prefix)
            self._line(term.style(marker + " ", "cyan") + shorten(tool_call(event), width))
        elif kind in _TOOL_RESULTS:
            self._result(event)
        elif kind == "session.thread_created":
            thread_id = str(event.get("session_thread_id", ""))
            self._line(
                term.style("◇ ", "cyan")
                + term.style(self.threads.name(thread_id), "bold")
                + term.style(f" ({thread_id})", "dim")
            )
        elif kind in ("agent.thread_message_sent", "agent.thread_message_received"):
            self._thread_message(event)
        elif kind in _THREAD_STATUS:
            text, color = _THREAD_STATUS[kind]
            self._line(term.style(text, color))
        elif kind == "session.thread_status_idle":
            stop = (event.get("stop_reason") or {}).get("type", "")
            self._line(term.style(f"— idle: {stop}", "dim"))
        elif kind == "session.status_running":
            term.busy("working")
        elif kind == "span.model_request_start":
            self.requests += 1
            term.busy("waiting for the model")
        elif kind == "span.model_request_end":
            # Previews still open will get no message (docs/gateway.md, "Deltas").
            for typing in self.typing.values():
                self._cut(typing)
            self.typing.clear()
            usage = event.get("model_usage") or {}
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
            term.busy("working")
        elif kind == "session.error":
            error = event.get("error") or {}
            retry = (error.get("retry_status") or {}).get("type", "")
            self._line(
                term.style(f"! {error.get('type')}: {error.get('message')} ({retry})", "yellow")
            )
        elif kind == "user.define_outcome":
            limit = event.get("max_iterations") or 3
            self._line(
                term.style("◎ outcome: ", "bold", "cyan")
                + term.style(str(event.get("description", "")), "bold")
                + term.style(f" (graded, up to {limit} evaluations)", "dim")
            )
        elif kind == "span.outcome_evaluation_start":
            self._line(
                term.style(f"◎ grading (evaluation {int(event.get('iteration') or 0) + 1})", "dim")
            )
            term.busy("grading")
        elif kind == "span.outcome_evaluation_ongoing":
            term.busy("grading")
        elif kind == "span.outcome_evaluation_end":
            self._verdict(event)
        elif kind == "session.status_rescheduled":
            self._line(term.style("↻ rescheduling", "yellow"))
        elif kind == "session.status_idle":
            term.busy(None)
        elif kind in ("session.status_terminated", "session.deleted"):
            term.busy(None)
            self._line(
                term.style(f"■ session {kind.rsplit('.', 1)[-1].removeprefix('status_')}", "red")
            )

    def _preview(self, event: dict[str, Any]) -> None:
        if event["type"] == "event_start":
            previewed = event.get("event") or {}
            if previewed.get("type") == "agent.thinking":
                self.term.busy("thinking")
            elif previewed.get("type") == "agent.message":
                self.typing[str(previewed.get("id", ""))] = Typing()
            return
        delta = event.get("delta") or {}
        content = delta.get("content") or {}
        if content.get("type") != "text":
            return
        # A preview whose start was shed still shows from its first delta.
        typing = self.typing.setdefault(str(event.get("event_id", "")), Typing())
        index = int(delta.get("index") or 0)
        typing.blocks[index] = typing.blocks.get(index, "") + str(content.get("text", ""))
        self._type(typing, typing.text, final=False)

    def _message(self, event: dict[str, Any]) -> None:
        text = text_of(event.get("content"))
        typing = self.typing.pop(str(event.get("id", "")), None)
        if typing is None and not self._prefix:
            # Stored under another id than the preview reserved (docs/gateway.md, "Deltas"):
            # the open preview that it continues.
            for preview_id, candidate in self.typing.items():
                if candidate.shown and text.startswith(candidate.shown):
                    typing = self.typing.pop(preview_id)
                    break
        if typing is None:
            self._line(text)
        else:
            self._type(typing, text, final=True)

    def _type(self, typing: Typing, text: str, final: bool) -> None:
        """Print what ``text`` adds to what ``typing`` has shown: on a terminal at once,
        elsewhere its whole lines (and, with ``final``, the rest)."""
        term = self.term
        if not text.startswith(typing.shown):
            # The previews went astray: the message as it is stored, on its own lines.
            if final:
                term.line(text)
            return
        new = text[len(typing.shown) :]
        if term.tty:
            term.busy(None)
            term.write(new + ("\n" if final else ""))
            typing.shown = text
        elif final:
            for row in new.split("\n"):
                term.line(row)
            typing.shown = text
        elif "\n" in new:
            whole = new[: new.rindex("\n")]
            for row in whole.split("\n"):
                term.line(row)
            typing.shown += whole + "\n"

    def _cut(self, typing: Typing) -> None:
        """A preview that will get no message: what it has, and a mark."""
        text = typing.text
        rest = text[len(typing.shown) :] if text.startswith(typing.shown) else ""
        if rest and not self.term.tty:
            self.term.line(rest)
        elif rest:
            self.term.write(rest)
        if text:
            self.term.line(self.term.style("  ⋯ cut off", "dim"))

    def _thread_message(self, event: dict[str, Any]) -> None:
        term = self.term
        if event["type"] == "agent.thread_message_sent":
            arrow, other = "→ ", event.get("to_agent_name") or "primary"
        else:
            arrow, other = "← ", event.get("from_agent_name") or "primary"
        head = arrow + str(other) + ": "
        rows = folded(text_of(event.get("content")), term.width - len(self._prefix) - len(head))
        self._line(term.style(head, "cyan") + rows[0])
        for row in rows[1:]:
            self._line(" " * len(head) + row)

    def _verdict(self, event: dict[str, Any]) -> None:
        term = self.term
        usage = event.get("usage") or {}
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        term.busy(None)
        result = str(event.get("result", ""))
        color = _VERDICT_COLORS.get(result, "yellow")
        explanation = " ".join(str(event.get("explanation") or "").split())
        line = f"◎ evaluation {int(event.get('iteration') or 0) + 1}: {result}"
        width = max(term.width - len(line) - 3 - len(self._prefix), 10)
        self._line(
            term.style(line, "bold", color)
            + (" — " + shorten(explanation, width) if explanation else "")
        )

    def _result(self, event: dict[str, Any]) -> None:
        term = self.term
        error = bool(event.get("is_error"))
        rows = folded(text_of(event.get("content")), term.width - 6 - len(self._prefix))
        for index, row in enumerate(rows):
            prefix = "  ⎿ " if index == 0 else "    "
            self._line(term.style(prefix + row, "red" if error else "dim"))

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
