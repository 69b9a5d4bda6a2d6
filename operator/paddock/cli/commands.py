"""What each `paddock` command does, through the official SDK pointed at the gateway."""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import anthropic
import yaml
from anthropic import Anthropic
from anthropic.types.beta.sessions import (
    BetaManagedAgentsEventParams as EventParams,
)
from anthropic.types.beta.sessions import (
    BetaManagedAgentsUserToolConfirmationEventParams as ToolConfirmation,
)

from paddock.cli.render import (
    PREVIEWED,
    Renderer,
    document,
    listing,
    preview_of,
    shorten,
    tool_call,
)
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
    with client.beta.sessions.events.stream(
        session.id, event_deltas=cast(Any, list(PREVIEWED))
    ) as stream:
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
                term.line(
                    f'  ◆ {what} waits for its result: paddock result {session_id} {event_id} "…"'
                )
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


def logs(
    client: Anthropic,
    term: Terminal,
    session: str,
    follow: bool,
    until_idle: bool,
    types: list[str] | None = None,
    output: str = "table",
) -> int:
    """Print the session's events (only those of ``types``, if given); with ``follow``, go
    on with new ones until the session is terminated or deleted, or with ``until_idle``
    until it waits for the user (exit code by stop reason, as `run`)."""
    renderer = Renderer(term)
    wanted = set(types or ())

    def show(event: dict[str, Any]) -> None:
        if not wanted or event["type"] in wanted:
            _show_logged(term, renderer, event, output)
        else:
            renderer.threads.learn(event)  # the tree holds also what is not shown

    if not follow:
        # The gateway filters; the filter above is for the stream, which it does not.
        selected = cast(Any, types) if types else anthropic.omit
        for item in client.beta.sessions.events.list(session, types=selected):
            show(item.to_dict(mode="json"))
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

    # Stream first, then history: an event appended in between is in one or both. Both are
    # read whole (the end of the session is seen whatever --type shows). People see messages
    # as they are typed; scripts (-o json|yaml) get the stored events only.
    previewed = [kind for kind in PREVIEWED if not wanted or kind in wanted]
    deltas = cast(Any, previewed) if previewed and output == "table" else anthropic.omit
    with client.beta.sessions.events.stream(session, event_deltas=deltas) as stream:
        seen: set[str] = set()
        code = None
        for item in client.beta.sessions.events.list(session):
            event: dict[str, Any] = item.to_dict(mode="json")
            seen.add(event["id"])
            show(event)
            code = done(event)
        if code is None and until_idle and idle is not None:
            return STOP_REASON_EXIT.get(idle["stop_reason"]["type"], EXIT_ERROR)
        try:
            with _stalls_reported(client, term, session):
                for live in stream:
                    event = live.to_dict(mode="json")
                    previews = preview_of(event)
                    if previews is not None:
                        # Previews of an event the history has shown are not shown again.
                        if previews not in seen:
                            renderer.show(event)
                        continue
                    if event["id"] in seen:
                        continue
                    show(event)
                    code = done(event)
                    if code is not None:
                        return code
                    if until_idle and idle is not None:
                        return STOP_REASON_EXIT.get(idle["stop_reason"]["type"], EXIT_ERROR)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
    return EXIT_OK


def _show_logged(term: Terminal, renderer: Renderer, event: dict[str, Any], output: str) -> None:
    """An event as the terminal shows it, or for scripts as one line of JSON (JSON Lines)
    or one YAML document."""
    if output == "json":
        term.line(json.dumps(event, ensure_ascii=False))
        return
    if output == "yaml":
        term.line("---\n" + document(event, output))
        return
    renderer.show(event)
    if event["type"] == "session.status_idle":
        stop = event["stop_reason"]
        pending = ", ".join(stop.get("event_ids") or [])
        term.line(
            term.style(f"— idle: {stop['type']}" + (f" ({pending})" if pending else ""), "dim")
        )


def _send(
    client: Anthropic,
    term: Terminal,
    output: str,
    session: str,
    events: list[EventParams],
    said: Callable[[list[dict[str, Any]]], list[str]],
) -> int:
    """Append ``events`` to the session; print what ``said`` makes of the appended events,
    or for scripts the events themselves."""
    sent = client.beta.sessions.events.send(session, events=events)
    appended = [event.to_dict(mode="json") for event in sent.data or []]
    assert appended, "the gateway answers with the events it appended"
    if output == "table":
        for line in said(appended):
            term.line(line)
    else:
        term.line(document(appended, output))
    return EXIT_OK


def send(client: Anthropic, term: Terminal, session: str, text: str, output: str = "table") -> int:
    message: EventParams = {"type": "user.message", "content": [{"type": "text", "text": text}]}
    return _send(client, term, output, session, [message], lambda sent: [sent[0]["id"]])


def interrupt(client: Anthropic, term: Terminal, session: str, output: str = "table") -> int:
    """Stop the session's turn: the running tool calls end as errors, then it goes idle."""
    return _send(
        client,
        term,
        output,
        session,
        [{"type": "user.interrupt"}],
        lambda sent: [f"interrupted {session} ({sent[0]['id']})"],
    )


def result(
    client: Anthropic,
    term: Terminal,
    session: str,
    event: str,
    text: str,
    error: bool,
    output: str = "table",
) -> int:
    """Answer the custom tool call ``event`` with ``text`` (an error with ``error``)."""
    answer: EventParams = {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": event,
        "content": [{"type": "text", "text": text}],
        "is_error": error,
    }
    return _send(
        client,
        term,
        output,
        session,
        [answer],
        lambda sent: [f"{'error' if error else 'result'} sent for {event} ({sent[0]['id']})"],
    )


def confirm(
    client: Anthropic,
    term: Terminal,
    session: str,
    event: str | None,
    allow: bool,
    message: str | None,
    output: str = "table",
) -> int:
    """Answer the tool call ``event``, or every call the session waits for."""
    event_ids = [event] if event else _pending(client, session)
    if not event_ids:
        term.line(f"session {session} waits for no tool confirmation")
        return EXIT_ERROR
    answers: list[EventParams] = []
    for event_id in event_ids:
        answer: ToolConfirmation = {
            "type": "user.tool_confirmation",
            "tool_use_id": event_id,
            "result": "allow" if allow else "deny",
        }
        if not allow and message:
            answer["deny_message"] = message
        answers.append(answer)
    verb = "allowed" if allow else "denied"
    return _send(
        client, term, output, session, answers, lambda _: [f"{verb} {e}" for e in event_ids]
    )


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


# Resources: agents, environments, sessions.


class UsageError(Exception):
    """Input the user has to fix, such as an unreadable file (exit code 2)."""


_SERVER_FIELDS = ("id", "type", "created_at", "updated_at", "archived_at")
"""Fields the server sets: dropped from a file, so that `get -o yaml`'s output, edited,
is a valid body for `create -f` or `update -f`."""
_REQUEST_OPTIONS = {
    "betas",
    "workspace_id",
    "extra_headers",
    "extra_query",
    "extra_body",
    "timeout",
}


def _show(
    term: Terminal, output: str, kind: str, data: dict[str, Any] | list[dict[str, Any]]
) -> None:
    """Objects of ``kind`` as a table, or one object (a `get`) or an array (a list) as a
    document."""
    if output != "table":
        term.line(document(data, output))
        return
    for index, line in enumerate(
        listing(kind, data if isinstance(data, list) else [data], time.time())
    ):
        term.line(term.style(line, "bold") if index == 0 else line)


def _changed(term: Terminal, output: str, kind: str, obj: dict[str, Any], what: str) -> int:
    """What a create, update, archive or delete did: one line for people (`agent agent_…
    created`), the object the gateway answered with for scripts."""
    if output == "table":
        term.line(f"{kind} {obj['id']} {what}")
    else:
        term.line(document(obj, output))
    return EXIT_OK


def read_body(path: str, kind: str) -> dict[str, Any]:
    """The API body of a ``kind`` in a JSON or YAML file (`-`: stdin), without the fields
    the server sets."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        body = json.loads(text)
    except ValueError:
        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(body, dict):
        raise UsageError(f"{path}: expected the fields of a {kind}, not {type(body).__name__}")
    if "apiVersion" in body and "kind" in body:
        # The CR has fields the API does not (credentials, harness, environmentRef): the
        # manifest goes to the cluster as it is, not through a lossy conversion here.
        raise UsageError(
            f"{path} is a Kubernetes manifest (kind {body['kind']}): apply it with "
            f"`kubectl apply -f {path}`; `-f` here takes the API's {kind} body"
        )
    return {key: value for key, value in body.items() if key not in _SERVER_FIELDS}


def _call(method: Callable[..., Any], source: str, body: dict[str, Any], *args: str) -> Any:
    """``method(*args)`` with the fields of ``body`` as its keyword arguments; a usage error
    names the fields it does not take, or requires and lacks."""
    fields = {
        name: parameter.default is inspect.Parameter.empty
        for name, parameter in inspect.signature(method).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _REQUEST_OPTIONS
    }
    missing = [name for name, required in fields.items() if required and name not in body]
    for problem, names in (("unknown", sorted(set(body) - set(fields))), ("missing", missing)):
        if names:
            plural = "s" * (len(names) > 1)
            raise UsageError(f"{source}: {problem} field{plural} {', '.join(names)}")
    return method(*args, **body)


def _body(path: str | None, kind: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The file's fields (if any), with the flags that were given on top."""
    body = read_body(path, kind) if path else {}
    body.update({key: value for key, value in flags.items() if value is not None})
    return body


def _resources(client: Anthropic, kind: str) -> Any:
    """The SDK's resource of ``kind``: the list, get, archive and delete verbs are the same
    for each."""
    return {
        "agent": client.beta.agents,
        "environment": client.beta.environments,
        "session": client.beta.sessions,
    }[kind]


def list_objects(
    client: Anthropic, term: Terminal, kind: str, output: str, limit: int | None, archived: bool
) -> int:
    """The newest ``limit`` objects of ``kind`` (all without a limit), archived ones too
    with ``archived``."""
    found = _resources(client, kind).list(
        limit=limit or anthropic.omit, include_archived=archived or anthropic.omit
    )
    items = found.data if limit else list(found)
    _show(term, output, kind, [item.to_dict(mode="json") for item in items])
    return EXIT_OK


def get(client: Anthropic, term: Terminal, kind: str, ref: str, output: str) -> int:
    _show(term, output, kind, _resources(client, kind).retrieve(ref).to_dict(mode="json"))
    return EXIT_OK


def archive(client: Anthropic, term: Terminal, kind: str, ref: str, output: str) -> int:
    archived = _resources(client, kind).archive(ref).to_dict(mode="json")
    return _changed(term, output, kind, archived, "archived")


def delete(client: Anthropic, term: Terminal, kind: str, ref: str, output: str) -> int:
    deleted = _resources(client, kind).delete(ref).to_dict(mode="json")
    return _changed(term, output, kind, deleted, "deleted")


def create(
    client: Anthropic,
    term: Terminal,
    kind: str,
    path: str | None,
    flags: dict[str, Any],
    output: str,
) -> int:
    """Create an agent or environment from the file and/or the flags."""
    body = _body(path, kind, flags)
    body.pop("version", None)  # a new agent starts at version 1
    created = _call(_resources(client, kind).create, path or "flags", body).to_dict(mode="json")
    version = f" (version {created['version']})" if kind == "agent" else ""
    return _changed(term, output, kind, created, "created" + version)


def update_agent(
    client: Anthropic,
    term: Terminal,
    agent: str,
    path: str | None,
    flags: dict[str, Any],
    output: str,
) -> int:
    """Change the fields of the file and flags. A `version` (in the file, or `--version`)
    makes it conditional: the gateway refuses with 409 if the agent has moved on since."""
    body = _body(path, "agent", flags)
    if not set(body) - {"version"}:
        raise UsageError("nothing to update: give -f FILE or a flag such as --system")
    before = client.beta.agents.retrieve(agent)
    updated = _call(client.beta.agents.update, path or "flags", body, before.id)
    after = updated.to_dict(mode="json")
    what = (
        f"updated: version {before.version} → {after['version']}"
        if after["version"] != before.version
        else f"unchanged (version {before.version})"
    )
    return _changed(term, output, "agent", after, what)


def agent_versions(client: Anthropic, term: Terminal, agent: str, output: str) -> int:
    """Every version of the agent, as the gateway lists them."""
    agent_id = client.beta.agents.retrieve(agent).id
    found = [v.to_dict(mode="json") for v in client.beta.agents.versions.list(agent_id)]
    _show(term, output, "version", found)
    return EXIT_OK
