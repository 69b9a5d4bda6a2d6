"""The console's browser tests: the demo's local stack (tests/e2e/test_local.py's, with a
script that also answers hostile text), a signed-in page per test, and screenshots.

Screenshots go to `$PADDOCK_ARTIFACTS` (default `.artifacts/screenshots`, git-ignored), one
per step a test names, so a failing run leaves what the page showed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse, demo_script
from paddock.testing.stack import LocalStack

from ..e2e.test_local import _why_not

if TYPE_CHECKING:  # Playwright is imported where a browser is launched (tests/conftest.py)
    from playwright.sync_api import Browser, Page

EXAMPLES = REPO_ROOT / "examples"
INJECT_PREFIX = "Inject: "
MODEL_PAYLOAD = (
    '<img src=x onerror="window.pwn(\'img\')"><script>window.pwn("script")</script><b>bold?</b>'
)
TOOL_PAYLOAD = '<svg onload="window.pwn(1)"></svg><iframe srcdoc="<script>parent.pwn(2)</script>">'


COORDINATOR, HELPER = "coordinator", "helper"
HELPER_REPLY = "hello from the helper's thread"


def _delegating(request: ModelRequest) -> Reply:
    """The coordinator (its system prompt says so) asks its helper once and reports."""
    if request.system_text == HELPER:
        return Reply([Text(HELPER_REPLY)])
    if request.assistant_turns == 0:
        return Reply([ToolUse("send_to_agent", {"agent": HELPER, "message": "say hello"})])
    return Reply([Text(f"The helper answered: {request.tool_result_text()}")])


def console_script(request: ModelRequest) -> Reply:
    """The demo's script; for the coordinator and its helper, one delegation; and for
    `Inject: …`: a reply with markup and script in it, a bash call whose output is markup
    and script, then a reply quoting that output."""
    if request.system_text in (COORDINATOR, HELPER):
        return _delegating(request)
    if not request.first_user_text.startswith(INJECT_PREFIX):
        reply = demo_script(request)
        assert isinstance(reply, Reply)
        return reply
    if request.assistant_turns == 0:
        return Reply(
            [
                Text(f"Here you go: {MODEL_PAYLOAD}"),
                ToolUse("bash", {"command": f"printf '%s\\n' '{TOOL_PAYLOAD}'"}),
            ]
        )
    return Reply([Text(f"The tool said {request.tool_result_text().splitlines()[0]}")])


ASKING_AGENT = "asking"


@pytest.fixture(scope="module")
def console_stack() -> Iterator[LocalStack]:
    """The local stack with the examples' Agent and Environment, an Agent `asking` whose
    bash calls wait for the user's confirmation, and a `coordinator` that delegates to a
    `helper` (threads)."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    # Its own bridge and addresses, so `make demo` and tests/e2e on this machine do not collide.
    with LocalStack(bridge="paddock-ui", pod_cidr="10.248.0.0/16", script=console_script) as stack:
        documents = list(yaml.safe_load_all((EXAMPLES / "hello-agent.yaml").read_text()))
        for document in documents:
            if document["kind"] == "Environment":
                document["spec"]["warmPool"] = {"size": 1}  # the tests run one at a time
        asking = next(d for d in documents if d["kind"] == "Agent")
        asking = yaml.safe_load(yaml.safe_dump(asking))
        asking["metadata"]["name"] = ASKING_AGENT
        asking["spec"]["tools"] = {
            "builtin": {"configs": [{"name": "bash", "permissionPolicy": "always_ask"}]}
        }
        agents = [asking]
        for name, extra in (
            (HELPER, {}),
            (COORDINATOR, {"multiagent": {"agents": [{"name": HELPER}]}}),
        ):
            agent = yaml.safe_load(
                yaml.safe_dump(next(d for d in documents if d["kind"] == "Agent"))
            )
            agent["metadata"]["name"] = name
            agent["spec"].update(system=name, **extra)
            agents.append(agent)
        stack.apply(*documents, *agents)
        yield stack


def artifacts_dir() -> Path:
    return Path(os.environ.get("PADDOCK_ARTIFACTS") or REPO_ROOT / ".artifacts" / "screenshots")


class Screenshots:
    """Saves the page as `<test>-<n>-<step>.png` under `artifacts_dir()`."""

    def __init__(self, page: Page, test: str) -> None:
        self.page, self.test, self.count = page, re.sub(r"\W+", "-", test), 0
        self.folder = artifacts_dir()
        self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.test}-{self.count}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Browser, console_stack: LocalStack) -> Iterator[Page]:
    """A fresh browser context at a laptop's size, signed in to the console with the stack's
    API key; `window.pwn` records calls (the injection test's tripwire) in `window.__pwned`."""
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    context.add_init_script(
        "window.__pwned = []; window.pwn = (what) => window.__pwned.push(String(what));"
    )
    opened = context.new_page()
    opened.goto(f"{console_stack.gateway_url}/console/")
    opened.get_by_label("Paddock API key or Kubernetes token").fill(console_stack.api_key)
    opened.get_by_role("button", name="Sign in").click()
    opened.get_by_role("heading", name="Sessions").wait_for()
    yield opened
    context.close()


@pytest.fixture
def screenshots(page: Page, request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(page, request.node.name)


def session_events(stack: LocalStack, session_id: str) -> list[dict[str, Any]]:
    import anthropic

    client = anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)
    return [e.to_dict() for e in client.beta.sessions.events.list(session_id)]
