"""Records the terminal session shown in docs/cli.md: `paddock run` in a real terminal
(tmux) against the test stack (gateway, harness worker, scripted demo model, sandbox),
answering the approval prompt, then `paddock sessions`. Prints two captures of the
screen: while the agent works, and at the end.

    .venv/bin/python -m tests.cli.recording
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.gateway.stack import Stack

from paddock.testing.controlplane import ControlPlane
from paddock.testing.fakemodel import DEMO_PROGRAM, Reply, Text, Thinking, ToolUse, turns
from paddock.testing.ports import wait_until_async
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import launch

TMUX = "paddock-recording"
TASK = "How many primes are there below 100?"
SCRIPT = turns(
    Reply(
        [
            Thinking("The user wants primes below 100; I will write and run a script."),
            Text("I'll write the program and run it."),
            ToolUse("write", {"file_path": "primes.py", "content": DEMO_PROGRAM}),
        ],
        delay=0.8,
    ),
    Reply([ToolUse("bash", {"command": "python3 primes.py"})], delay=0.8),
    lambda r: Reply(
        [Text(f"There are {r.tool_result_text().splitlines()[0]} primes below 100.")], delay=0.8
    ),
)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


async def screen_with(text: str) -> str:
    """The screen once it shows ``text`` (a minute at most)."""

    def showing() -> str | None:
        screen = tmux("capture-pane", "-p", "-t", TMUX)
        return screen if text in screen else None

    return await wait_until_async(showing, timeout=60, what=f"{text!r} on screen", interval=0.1)


async def prompt() -> None:
    """Until the shell waits for a command."""

    def waiting() -> bool:
        lines = tmux("capture-pane", "-p", "-t", TMUX).rstrip().splitlines()
        return bool(lines) and lines[-1] == "$"

    await wait_until_async(waiting, timeout=60, what="the shell's prompt", interval=0.1)


async def record(stack: Stack) -> str:
    """A screen while the agent works (spinner), and the screen at the end."""
    client = stack.client()
    environment = await client.beta.environments.create(name="python")
    agent = await client.beta.agents.create(
        name="coder",
        model="claude-sonnet-4-6",
        tools=[
            {
                "type": "agent_toolset_20260401",
                "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
            }
        ],
    )
    name = stack.agent_resource(agent.id)["metadata"]["name"]
    environment_name = next(
        r["metadata"]["name"]
        for r in stack.resources("environments", stack.a.namespace)
        if r["metadata"]["labels"]["paddock.dev/environment-id"] == environment.id
    )
    stack.start_worker(agent.id, SCRIPT)
    bin_dir = Path(sys.executable).parent
    # The shell gets its environment from `env`: tmux keeps PATH from its server.
    tmux(
        "new-session", "-d", "-s", TMUX, "-x", "96", "-y", "30",
        "env", f"PATH={bin_dir}:{os.environ['PATH']}", f"PADDOCK_URL={stack.url}",
        f"PADDOCK_API_KEY={stack.a.key}", "PS1=$ ", "bash", "--norc", "--noprofile",
    )  # fmt: skip
    try:
        await prompt()
        command = f'paddock run {name} "{TASK}" --environment {environment_name}'
        tmux("send-keys", "-t", TMUX, command, "Enter")
        await screen_with("[y/N]")
        tmux("send-keys", "-t", TMUX, "y", "Enter")
        working = await screen_with("waiting for the model")
        await prompt()
        tmux("send-keys", "-t", TMUX, "paddock sessions", "Enter")
        await screen_with("AGE")
        await prompt()
        done = tmux("capture-pane", "-p", "-t", TMUX).rstrip()
        return working.rstrip() + "\n\n" + done
    finally:
        tmux("kill-session", "-t", TMUX)


async def main() -> None:
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed: apt-get install tmux")
    base = Path(tempfile.mkdtemp(prefix="rec-"))
    sandbox = launch(base / "sandbox", workdir=base)
    try:
        with RedisServer() as redis, ControlPlane() as plane:
            plane.apply_crds()
            stack = await Stack(plane, redis, sandbox).start()
            try:
                print(await record(stack))
            finally:
                await stack.close()
    finally:
        sandbox.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
