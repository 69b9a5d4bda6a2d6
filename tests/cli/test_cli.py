"""`paddock` end to end: the console script against a running gateway, a real harness
worker, the scripted model and a real sandbox."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import threading
from typing import Any

import pytest
from tests.gateway.stack import Stack

from paddock.eventlog import EventLog, SessionStatusTerminatedEvent
from paddock.testing.fakemodel import Fail, Reply, Text, Thinking, ToolUse, turns
from paddock.testing.ports import wait_until_async

from .conftest import PADDOCK, Result, cli_env, paddock


async def logs_showing(stack: Stack, session: str, text: str) -> Result:
    """`paddock logs` once its output holds ``text``."""

    async def showing() -> Result | None:
        logs = await paddock(stack, "logs", session)
        return logs if text in logs.out else None

    return await wait_until_async(showing, timeout=30, what=f"logs showing {text!r}", interval=0.1)


pytestmark = pytest.mark.timeout(90)

PROGRAM = "print(sum(range(10)))\n"
ASK_BASH = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
}


def program_script() -> Any:
    return turns(
        Reply(
            [
                Thinking("Write it, then run it."),
                Text("I'll write the program and run it."),
                ToolUse("write", {"file_path": "sum.py", "content": PROGRAM}),
            ]
        ),
        Reply([ToolUse("bash", {"command": "python3 sum.py; seq 1 10"})]),
        lambda r: Reply([Text(f"The sum is {r.tool_result_text().splitlines()[0]}.")]),
    )


async def agent_with_worker(stack: Stack, script: Any, **body: Any) -> dict[str, Any]:
    client = stack.client()
    environment = await client.beta.environments.create(name=f"cli-{os.urandom(3).hex()}")
    agent = await client.beta.agents.create(
        name="Coder",
        model="claude-sonnet-4-6",
        **{"tools": [{"type": "agent_toolset_20260401"}], **body},
    )
    resource = stack.agent_resource(agent.id)
    with stack.kube() as kube:
        # Sessions that name no environment use the Agent's.
        kube.patch(
            f"/apis/paddock.dev/v1alpha1/namespaces/{stack.a.namespace}/agents/{resource['metadata']['name']}",
            json={
                "spec": {
                    "environmentRef": {
                        "name": environment.name and _env_name(stack, environment.id)
                    }
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
    model = stack.start_worker(agent.id, script)
    return {
        "id": agent.id,
        "name": resource["metadata"]["name"],
        "environment": environment.id,
        "model": model,
    }


def _env_name(stack: Stack, environment_id: str) -> str:
    (found,) = [
        r["metadata"]["name"]
        for r in stack.resources("environments", stack.a.namespace)
        if r["metadata"]["labels"]["paddock.dev/environment-id"] == environment_id
    ]
    return found


def session_of(result: Result) -> str:
    match = re.search(r"session (sesn_\w+)", result.out)
    assert match, result.out
    return match.group(1)


class Console:
    """The `paddock` console script running, its output collected as it comes: piped, or
    with ``tty`` on a pseudo-terminal (stdin too, for `type`)."""

    def __init__(
        self, process: asyncio.subprocess.Process, read: Any, controller: int | None = None
    ) -> None:
        self.process = process
        self.output = b""
        self.controller = controller
        self._reader = asyncio.create_task(self._read(read))

    @classmethod
    async def start(cls, stack: Stack, *args: str, tty: bool = False) -> Console:
        if not tty:
            process = await asyncio.create_subprocess_exec(
                str(PADDOCK),
                *args,
                env=cli_env(stack),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdout is not None
            return cls(process, process.stdout.read)
        controller, terminal = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            str(PADDOCK),
            *args,
            env={**cli_env(stack), "TERM": "xterm"},
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        loop = asyncio.get_running_loop()

        async def read(size: int) -> bytes:
            try:
                return await loop.run_in_executor(None, os.read, controller, size)
            except OSError:  # the process ended: EIO on the controller
                os.close(controller)
                return b""

        return cls(process, read, controller)

    def type(self, text: str) -> None:
        assert self.controller is not None, "a console on a terminal"
        os.write(self.controller, text.encode())

    async def _read(self, read: Any) -> None:
        while chunk := await read(4096):
            self.output += chunk

    @property
    def text(self) -> str:
        """The output as the screen shows it: what an erased line held (the spinner) gone,
        without colours and carriage returns."""
        shown = ""
        for index, part in enumerate(self.output.decode(errors="replace").split("\r\x1b[2K")):
            if index:
                shown = shown[: shown.rfind("\n") + 1]
            shown += part
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", shown)

    async def showing(self, text: str, times: int = 1) -> str:
        return await wait_until_async(
            lambda: self.text if self.text.count(text) >= times else None,
            timeout=30,
            what=f"the output showing {text!r}",
        )

    async def end(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), 30)
        await asyncio.wait_for(self._reader, 30)
        return code


async def test_run_streams_a_session_to_end_turn(stack: Stack, sandbox) -> None:
    agent = await agent_with_worker(stack, program_script())
    result = await paddock(stack, "run", agent["name"], "Sum the numbers below ten")
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert "\x1b[" not in result.out  # not a terminal: no colours, no spinner
    assert lines[1] == "> Sum the numbers below ten"
    assert "I'll write the program and run it." in lines
    assert "● write(sum.py)" in lines
    assert "● bash(python3 sum.py; seq 1 10)" in lines
    # The bash result is folded to four lines and a count.
    index = lines.index("● bash(python3 sum.py; seq 1 10)")
    assert lines[index + 1 : index + 6] == ["  ⎿ 45", "    1", "    2", "    3", "    … +8 lines"]
    assert "The sum is 45." in lines
    assert re.match(r"✓ end_turn · 3 model requests · [\d,]+ in / [\d,]+ out tokens · ", lines[-1])
    assert (sandbox.workdir / "sum.py").read_text() == PROGRAM

    session = session_of(result)
    logs = await paddock(stack, "logs", session)
    assert logs.code == 0
    assert "The sum is 45." in logs.out
    assert "— idle: end_turn" in logs.out


async def test_run_stops_for_approval_when_not_interactive(stack: Stack, sandbox) -> None:
    script = turns(
        Reply([ToolUse("bash", {"command": "echo approved > approved.txt"})]),
        lambda r: Reply([Text("Done after approval.")]),
    )
    agent = await agent_with_worker(stack, script, tools=[ASK_BASH])
    result = await paddock(stack, "run", agent["id"], "touch it")
    assert result.code == 3, result.out + result.err
    session = session_of(result)
    assert f"needs approval: paddock approve {session} sevt_" in result.out
    assert "■ requires_action" in result.out
    assert not (sandbox.workdir / "approved.txt").exists()

    # --until-idle ends at once on a session that waits, with the exit code of `run`.
    waiting = await asyncio.wait_for(paddock(stack, "logs", session, "-f", "--until-idle"), 30)
    assert waiting.code == 3, waiting.out + waiting.err
    follow = asyncio.create_task(paddock(stack, "logs", session, "-f"))
    approved = await paddock(stack, "approve", session)
    assert approved.code == 0, approved.err
    assert approved.out.startswith("allowed sevt_")
    # Once the user answered, it waits for the turn to end.
    until_idle = await asyncio.wait_for(paddock(stack, "logs", session, "-f", "--until-idle"), 30)
    assert until_idle.code == 0, until_idle.out + until_idle.err
    assert "Done after approval." in until_idle.out
    logs = await logs_showing(stack, session, "— idle: end_turn")
    assert "Done after approval." in logs.out
    assert (sandbox.workdir / "approved.txt").read_text() == "approved\n"
    # `logs -f` saw it all live and ends when the session does.
    await EventLog(stack.redis, stack.a.namespace).send(session, [SessionStatusTerminatedEvent()])
    followed = await asyncio.wait_for(follow, 30)
    assert followed.code == 7
    assert "  ✓ allowed" in followed.out
    assert "Done after approval." in followed.out
    assert followed.out.rstrip().endswith("■ session terminated")


async def test_run_asks_on_a_terminal(stack: Stack, sandbox) -> None:
    script = turns(
        Reply([ToolUse("bash", {"command": "echo yes > asked.txt"})]),
        lambda r: Reply([Text("Ran it.")]),
    )
    agent = await agent_with_worker(stack, script, tools=[ASK_BASH])
    console = await Console.start(stack, "run", agent["id"], "ask me", tty=True)
    await console.showing("[y/N]")
    console.type("y\n")
    assert await console.end() == 0, console.text
    text = console.text
    assert "Allow bash(echo yes > asked.txt)? [y/N]" in text
    assert "✓ allowed" in text
    assert "Ran it." in text
    assert (sandbox.workdir / "asked.txt").read_text() == "yes\n"


async def test_exit_codes_follow_the_stop_reason(stack: Stack) -> None:
    agent = await agent_with_worker(stack, lambda request: Fail(529, retry_after=0.01))
    result = await paddock(stack, "run", agent["id"], "fail please")
    assert result.code == 4, result.out
    assert "! model_overloaded_error" in result.out
    assert "■ retries_exhausted" in result.out


async def test_send_sessions_and_agents(stack: Stack) -> None:
    agent = await agent_with_worker(
        stack, lambda request: Reply([Text(f"echo: {request.last_user_text}")])
    )
    first = await paddock(stack, "run", agent["id"], "hello")
    session = session_of(first)
    sent = await paddock(stack, "send", session, "again")
    assert sent.code == 0
    assert sent.out.startswith("sevt_")
    await logs_showing(stack, session, "echo: again")

    sessions = await paddock(stack, "sessions")
    header, row = sessions.out.splitlines()[:2]
    assert header.split() == ["ID", "STATUS", "AGENT", "TITLE", "AGE"]
    assert row.split()[:4] == [session, "idle", "Coder", "hello"]
    agents = await paddock(stack, "agents")
    assert f"{agent['id']}  Coder  claude-sonnet-4-6  2" in agents.out


async def test_usage_and_api_errors(stack: Stack) -> None:
    missing = await paddock(stack, "agents", env={**cli_env(stack), "PADDOCK_API_KEY": ""})
    assert missing.code == 2
    assert "PADDOCK_API_KEY" in missing.err
    unknown = await paddock(stack, "run", "agent_nothere", "x")
    assert unknown.code == 1
    assert "404 agent agent_nothere not found" in unknown.err
    down = await paddock(
        stack, "agents", env={**cli_env(stack), "PADDOCK_URL": "http://127.0.0.1:9"}
    )
    assert down.code == 1
    assert "cannot reach the gateway" in down.err
    nothing = await paddock(stack, "approve", "sesn_0000000000000000000000")
    assert nothing.code == 1


async def say(stack: Stack, session: str, text: str) -> None:
    """Send ``text`` to the session as a `user.message`."""
    await stack.client().beta.sessions.events.send(
        session, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )


async def test_logs_show_outcome_verdicts(stack: Stack) -> None:
    from tests.gateway.test_outcomes import RUBRIC
    from tests.gateway.test_outcomes import script as outcome_script

    agent = await agent_with_worker(stack, outcome_script)
    client = stack.client()
    session = (
        await client.beta.sessions.create(agent=agent["id"], environment_id=agent["environment"])
    ).id
    follower = await Console.start(stack, "logs", session, "-f")
    await say(stack, session, "Hi")
    await follower.showing("— idle: end_turn")  # its stream is open
    await client.beta.sessions.events.send(
        session,
        events=[
            {
                "type": "user.define_outcome",
                "description": "Tell me the answer.",
                "rubric": {"type": "text", "content": RUBRIC},
            }
        ],
    )
    await follower.showing("— idle: end_turn", times=2)
    await EventLog(stack.redis, stack.a.namespace).send(session, [SessionStatusTerminatedEvent()])
    assert await follower.end() == 7
    logs = await paddock(stack, "logs", session)
    # Live and from the history alike: the outcome, each evaluation's start and verdict.
    for out in (follower.text, logs.out):
        assert [line for line in out.splitlines() if line.startswith("◎")] == [
            "◎ outcome: Tell me the answer. (graded, up to 3 evaluations)",
            "◎ grading (evaluation 1)",
            "◎ evaluation 1: needs_revision — The rubric asks for 42.",
            "◎ grading (evaluation 2)",
            "◎ evaluation 2: satisfied — It names 42.",
        ], out


FIRST, TYPING, REST = "The first line.\n", "Still typing the", " second line."


async def test_logs_follow_types_messages_as_the_model_streams(stack: Stack) -> None:
    """`logs -f` prints an agent.message from its previews while the model still streams
    it (whole lines when piped, as typed on a terminal), and not again when it is stored."""
    assert len(FIRST) == len(TYPING) == 16  # one chunk of the scripted model's stream each
    agent = await agent_with_worker(
        stack, turns(Reply([Text("Ready.")]), Reply([Text(FIRST + TYPING + REST)]))
    )
    gate = threading.Event()

    def hold(delta: dict[str, Any]) -> None:
        # Runs on the scripted model's own thread: holding it holds the model's stream
        # before its last chunk, with the first two sent.
        if delta.get("text") == REST:
            gate.wait(30)

    agent["model"].on_delta = hold
    client = stack.client()
    session = (
        await client.beta.sessions.create(agent=agent["id"], environment_id=agent["environment"])
    ).id
    piped = await Console.start(stack, "logs", session, "-f")
    typed = await Console.start(stack, "logs", session, "-f", tty=True)
    try:
        # A first turn, seen live by both: their streams are open.
        await say(stack, session, "Hi")
        for follower in (piped, typed):
            await follower.showing("— idle: end_turn")
        await say(stack, session, "Go")
        # Held mid-message: the stored message does not exist yet.
        assert "The first line.\n" in await piped.showing("The first line.\n")
        assert (FIRST + TYPING) in await typed.showing(FIRST + TYPING)
        stored = [e.type async for e in client.beta.sessions.events.list(session)]
        assert stored.count("agent.message") == 1, stored  # only "Ready."
        assert TYPING not in piped.text  # piped: half a line waits for the rest
    finally:
        gate.set()
    for follower in (piped, typed):
        await follower.showing("— idle: end_turn", times=2)
    await EventLog(stack.redis, stack.a.namespace).send(session, [SessionStatusTerminatedEvent()])
    assert await piped.end() == 7
    assert await typed.end() == 7
    for follower in (piped, typed):
        lines = follower.text.splitlines()
        # Each line once, as the stored message has it.
        assert lines.count("The first line.") == 1, lines
        assert lines.count(TYPING + REST) == 1, lines
        assert lines.index(TYPING + REST) == lines.index("The first line.") + 1
    assert piped.text.splitlines()[-3:] == [
        TYPING + REST,
        "— idle: end_turn",
        "■ session terminated",
    ]
