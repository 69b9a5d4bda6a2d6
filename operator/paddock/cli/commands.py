"""What each `paddock` command does, through the official SDK pointed at the gateway."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import anthropic
from anthropic import Anthropic
from anthropic.types.beta.sessions import (
    BetaManagedAgentsUserToolConfirmationEventParams as ToolConfirmation,
)

from paddock.cli.render import Renderer, shorten, tool_call
from paddock.cli.terminal import Terminal

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REQUIRES_ACTION = 3
EXIT_TERMINATED = 7
EXIT_INTERRUPTED = 130
STOP_REASON_EXIT = {
    "end_turn": EXIT_OK,
    "requires_action": EXIT_REQUIRES_ACTION,
    "retries_exhausted": 4,
    "budget_reached": 5,
    "refusal": 6,
}
"""Exit code of `paddock run` by the stop reason of the turn (docs/cli.md)."""
_LAST_EVENTS = ("session.status_terminated", "session.deleted")
STALL_POLL_S = 2.0
"""How often a followed session is asked why it makes no progress."""


@contextlib.contextmanager
def _stalls_reported(client: Anthropic, term: Terminal, session_id: str) -> Iterator[None]:
    """While the block runs, say (once per reason) why the session makes no progress: the
    gateway's `status_message`, for example `waiting for a harness worker:
    HarnessCrashLooping: …`. The event stream alone would only be silent."""
    stop = threading.Event()

    def watch() -> None:
        said = ""
        while not stop.wait(STALL_POLL_S):
            try:
                status: dict[str, Any] = client.beta.sessions.retrieve(session_id).to_dict()
            except anthropic.APIError:
                continue
            message = status.get("status_message")
            if message and message != said:
                term.line(term.style(f"… {message}", "yellow"))
            said = message or ""

    thread = threading.Thread(target=watch, name="stall-reporter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def run(client: Anthropic, term: Terminal, agent: str, task: str, environment: str | None) -> int:
    """Start a session of ``agent`` on ``task`` and follow it to the end of the turn,
    asking to approve tool calls when the terminal is interactive."""
    found = client.beta.agents.retrieve(agent)
    session = client.beta.sessions.create(
        agent=found.id,
        # Without --environment the gateway uses the Agent's environmentRef (the SDK's
        # signature requires an environment, hence the ignore).
        environment_id=environment if environment else anthropic.omit,  # type: ignore[arg-type]
        title=shorten(task.splitlines()[0] if task.strip() else "paddock run", 200),
    )
    term.line(term.style(f"session {session.id} · agent {found.name} (v{found.version})", "dim"))
    renderer = Renderer(term)
    started = time.monotonic()
    # The stream is open before the task is sent: nothing is missed.
    with client.beta.sessions.events.stream(session.id) as stream:
        client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": task}]}],
        )
        try:
            with _stalls_reported(client, term, session.id):
                return _follow(client, term, renderer, session.id, stream, started)
        except KeyboardInterrupt:
            term.busy(None)
            client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
            term.line(term.style(f"interrupted; the session {session.id} is stopping", "yellow"))
            return EXIT_INTERRUPTED


def _follow(
    client: Anthropic,
    term: Terminal,
    renderer: Renderer,
    session_id: str,
    stream: Iterable[Any],
    started: float,
) -> int:
    for item in stream:
        event = item.to_dict()
        renderer.show(event)
        kind = event["type"]
        if kind in _LAST_EVENTS:
            return EXIT_TERMINATED
        if kind != "session.status_idle":
            continue
        stop = event["stop_reason"]
        if stop["type"] == "requires_action" and _answer(
            client, term, renderer, session_id, stop.get("event_ids") or []
        ):
            continue
        code = STOP_REASON_EXIT.get(stop["type"], EXIT_ERROR)
        summary = renderer.summary(stop["type"], time.monotonic() - started)
        term.line(term.style(("✓ " if code == EXIT_OK else "■ ") + summary, "dim"))
        return code
    term.line(term.style("the event stream ended unexpectedly", "red"))
    return EXIT_ERROR


def _answer(
    client: Anthropic, term: Terminal, renderer: Renderer, session_id: str, event_ids: list[str]
) -> bool:
    """Ask about each pending tool call and send the answers; False if the turn cannot go on
    from here (not interactive, or a custom tool waits for a result)."""
    pending = [(event_id, renderer.tool_uses.get(event_id)) for event_id in event_ids]
    if not term.interactive or any(
        use is None or use["type"] == "agent.custom_tool_use" for _, use in pending
    ):
        for event_id, use in pending:
            what = tool_call(use) if use else event_id
            if use and use["type"] == "agent.custom_tool_use":
                term.line(f"  ◆ {what} waits for a user.custom_tool_result ({event_id})")
            else:
                term.line(f"  ? {what} needs approval: paddock approve {session_id} {event_id}")
        return False
    answers: list[ToolConfirmation] = []
    for event_id, use in pending:
        assert use is not None
        if term.ask(term.style("Allow ", "bold") + shorten(tool_call(use), term.width - 20) + "?"):
            answers.append(
                {"type": "user.tool_confirmation", "tool_use_id": event_id, "result": "allow"}
            )
        else:
            answers.append(
                {
                    "type": "user.tool_confirmation",
                    "tool_use_id": event_id,
                    "result": "deny",
                    "deny_message": "The user denied this tool call.",
                }
            )
    client.beta.sessions.events.send(session_id, events=answers)
    return True


def logs(client: Anthropic, term: Terminal, session: str, follow: bool, until_idle: bool) -> int:
    """Print the session's events; with ``follow``, go on with new ones until the session
    is terminated or deleted, or with ``until_idle`` until it waits for the user (exit code
    by stop reason, as `run`)."""
    renderer = Renderer(term)
    if not follow:
        for item in client.beta.sessions.events.list(session):
            _show_logged(term, renderer, item.to_dict())
        return EXIT_OK
    idle: dict[str, Any] | None = None  # the idle event, unless the user spoke after it

    def done(event: dict[str, Any]) -> int | None:
        nonlocal idle
        kind = event["type"]
        if kind == "session.status_idle":
            idle = event
        elif kind.startswith("user.") or kind == "session.status_running":
            idle = None
        if kind in _LAST_EVENTS:
            return EXIT_TERMINATED
        return None

    # Stream first, then history: an event appended in between is in one or both.
    with client.beta.sessions.events.stream(session) as stream:
        seen: set[str] = set()
        code = None
        for item in client.beta.sessions.events.list(session):
            event: dict[str, Any] = item.to_dict()
            seen.add(event["id"])
            _show_logged(term, renderer, event)
            code = done(event)
        if code is None and until_idle and idle is not None:
            return STOP_REASON_EXIT.get(idle["stop_reason"]["type"], EXIT_ERROR)
        try:
            with _stalls_reported(client, term, session):
                for live in stream:
                    event = live.to_dict()
                    if event["id"] in seen:
                        continue
                    _show_logged(term, renderer, event)
                    code = done(event)
                    if code is not None:
                        return code
                    if until_idle and idle is not None:
                        return STOP_REASON_EXIT.get(idle["stop_reason"]["type"], EXIT_ERROR)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return EXIT_OK


def _show_logged(term: Terminal, renderer: Renderer, event: dict[str, Any]) -> None:
    renderer.show(event)
    if event["type"] == "session.status_idle":
        stop = event["stop_reason"]
        pending = ", ".join(stop.get("event_ids") or [])
        term.line(
            term.style(f"— idle: {stop['type']}" + (f" ({pending})" if pending else ""), "dim")
        )


def send(client: Anthropic, term: Terminal, session: str, text: str) -> int:
    sent = client.beta.sessions.events.send(
        session, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )
    assert sent.data, "the gateway answers with the events it appended"
    term.line(sent.data[0].id)
    return EXIT_OK


def confirm(
    client: Anthropic,
    term: Terminal,
    session: str,
    event: str | None,
    allow: bool,
    message: str | None,
) -> int:
    """Answer the tool call ``event``, or every call the session waits for."""
    event_ids = [event] if event else _pending(client, session)
    if not event_ids:
        term.line(f"session {session} waits for no tool confirmation")
        return EXIT_ERROR
    answers: list[ToolConfirmation] = []
    for event_id in event_ids:
        answer: ToolConfirmation = {
            "type": "user.tool_confirmation",
            "tool_use_id": event_id,
            "result": "allow" if allow else "deny",
        }
        if not allow and message:
            answer["deny_message"] = message
        answers.append(answer)
    client.beta.sessions.events.send(session, events=answers)
    for event_id in event_ids:
        term.line(f"{'allowed' if allow else 'denied'} {event_id}")
    return EXIT_OK


def _pending(client: Anthropic, session: str) -> list[str]:
    """Tool calls named by the session's latest idle, if it requires action."""
    page = client.beta.sessions.events.list(
        session, order="desc", limit=1, types=["session.status_idle"]
    )
    for item in page.data:
        idle: dict[str, Any] = item.to_dict()
        stop = idle["stop_reason"]
        if stop["type"] == "requires_action":
            return [str(event_id) for event_id in stop.get("event_ids") or []]
    return []


def _age(moment: datetime | str) -> str:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    seconds = max(int(time.time() - moment.timestamp()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(term: Terminal, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        text = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        term.line(term.style(text.rstrip(), "bold") if index == 0 else text.rstrip())


def sessions(client: Anthropic, term: Terminal, limit: int) -> int:
    page = client.beta.sessions.list(limit=limit)
    rows = [
        [s.id, s.status, s.agent.name, shorten(s.title or "", 40), _age(s.created_at)]
        for s in page.data
    ]
    _table(term, ["ID", "STATUS", "AGENT", "TITLE", "AGE"], rows)
    return EXIT_OK


def agents(client: Anthropic, term: Terminal) -> int:
    rows = [
        [a.id, a.name, a.model.id, str(a.version), _age(a.created_at)]
        for a in client.beta.agents.list()
    ]
    _table(term, ["ID", "NAME", "MODEL", "VERSION", "AGE"], rows)
    return EXIT_OK
