"""The web console in a real browser (headless Chromium) against the local stack: the
gateway serves it, the operator and harness run the sessions, the scripted model answers.

Each test drives the page as a person would (labels, roles, buttons) and checks what the
page shows; the API and the Session resources confirm it happened.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect
from tests.console.conftest import (
    ASKING_AGENT,
    COORDINATOR,
    EXAMPLES,
    HELPER_REPLY,
    INJECT_PREFIX,
    MODEL_PAYLOAD,
    TOOL_PAYLOAD,
    Screenshots,
    session_events,
)

from paddock.testing.stack import LocalStack

LIVE_S = 120_000
"""Milliseconds the page may take to show what a session does (a loaded machine)."""


BUDGET: Any = {"type": "limit", "max_list_cost": {"amount": "500", "currency": "USD"}}


def _client(stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.gateway_url, api_key=stack.api_key)


def _start(stack: LocalStack, agent: str, text: str) -> str:
    """A session of ``agent`` (by its Kubernetes name) that is sent ``text``; its id."""
    client = _client(stack)
    session = client.beta.sessions.create(agent=agent, environment_id="python")
    client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )
    return session.id


def _open(page: Page, stack: LocalStack, session_id: str) -> None:
    page.goto(f"{stack.gateway_url}/console/#/session/{session_id}")
    expect(page.locator(".summary")).to_contain_text(session_id, timeout=30_000)
    expect(page.locator(".live")).to_have_text("live", timeout=30_000)


def _status(page: Page) -> Any:
    return page.locator("#session-status")


def test_the_console_is_served_with_a_strict_policy_and_asks_for_a_key(
    console_stack: LocalStack, page: Page
) -> None:
    answer = httpx.get(f"{console_stack.gateway_url}/console/")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert (
        httpx.get(f"{console_stack.gateway_url}/console/main.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )
    assert httpx.get(f"{console_stack.gateway_url}/console/../app.py").status_code == 404
    # The data is the API's, behind the key as ever.
    assert httpx.get(f"{console_stack.gateway_url}/v1/console/sessions").status_code == 401

    # A wrong key is refused on the sign-in form and nothing is kept.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Paddock API key or Kubernetes token").fill("pdk-wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("401")
    assert page.evaluate("sessionStorage.length") == 0


def test_the_demo_session_is_watched_live_to_end_turn(
    console_stack: LocalStack, page: Page, screenshots: Screenshots
) -> None:
    client = _client(console_stack)
    # The demo's session (examples/hello-session.yaml), made through the API so the page can
    # be open before it runs.
    demo = yaml.safe_load((EXAMPLES / "hello-session.yaml").read_text())
    session = client.beta.sessions.create(
        agent="hello", environment_id="python", title=demo["spec"]["title"], budget=BUDGET
    )
    _open(page, console_stack, session.id)
    client.beta.sessions.events.send(session.id, events=demo["spec"]["initialEvents"])

    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline).to_contain_text("There are 25 primes below 100.", timeout=LIVE_S)
    expect(timeline.locator("[data-type='session.status_idle']").last).to_contain_text("end_turn")
    write = timeline.locator("[data-type='agent.tool_use']").first
    expect(write).to_contain_text("write")
    expect(write).to_contain_text("primes.py")
    expect(timeline.locator("[data-type='agent.tool_use']").nth(1)).to_contain_text("25")
    expect(_status(page)).to_have_text("idle")
    expect(page.locator(".summary")).to_contain_text("of $5.00")
    screenshots("session")

    # The list shows it with the operator's phase and stop reason, filterable.
    page.get_by_role("link", name="Sessions", exact=True).first.click()
    row = page.locator(f"tr[data-session-id='{session.id}']")
    expect(row).to_contain_text("end_turn", timeout=30_000)
    expect(row).to_contain_text("Idle")
    expect(row).to_contain_text("hello")
    expect(row).to_contain_text("of $5.00")
    page.get_by_label("Filter").fill("no session is called this")
    expect(row).to_be_hidden()
    page.get_by_label("Filter").fill("primes")
    expect(row).to_be_visible()
    screenshots("sessions")

    page.get_by_role("link", name="Agents and environments").click()
    agent = page.locator("tr", has_text="hello").first
    expect(agent).to_contain_text("Ready", timeout=30_000)
    expect(page.locator("tr", has_text="python").locator(".warm")).to_have_text(
        "1 / 1", timeout=60_000
    )
    screenshots("resources")


def test_an_always_ask_tool_call_is_approved_and_another_denied_from_the_page(
    console_stack: LocalStack, page: Page, screenshots: Screenshots
) -> None:
    approved = _start(console_stack, ASKING_AGENT, "Run: echo approved-from-the-page")
    _open(page, console_stack, approved)
    approval = page.get_by_role("region", name="Tool calls waiting for approval")
    expect(approval.get_by_role("heading")).to_contain_text("bash", timeout=LIVE_S)
    screenshots("waiting")
    # With the keyboard, as anyone may.
    approval.get_by_role("button", name="Approve").focus()
    page.keyboard.press("Enter")
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline).to_contain_text("Output: approved-from-the-page", timeout=LIVE_S)
    expect(timeline).to_contain_text("Approved")
    expect(approval.get_by_role("button")).to_have_count(0)
    screenshots("approved")
    confirmations = [
        e for e in session_events(console_stack, approved) if e["type"] == "user.tool_confirmation"
    ]
    assert [c["result"] for c in confirmations] == ["allow"]

    denied = _start(console_stack, ASKING_AGENT, "Run: echo never-run")
    _open(page, console_stack, denied)
    expect(approval.get_by_role("heading")).to_contain_text("bash", timeout=LIVE_S)
    approval.get_by_label("Message if denied").fill("not on a Friday")
    approval.get_by_role("button", name="Deny").click()
    expect(timeline).to_contain_text("Denied: not on a Friday", timeout=LIVE_S)
    # The model is told (the demo script says the command failed and tries another, which
    # asks again).
    expect(timeline).to_contain_text("The command failed", timeout=LIVE_S)
    expect(approval.get_by_role("heading")).to_contain_text("bash", timeout=LIVE_S)
    screenshots("denied")
    events = session_events(console_stack, denied)
    (confirmation,) = [e for e in events if e["type"] == "user.tool_confirmation"]
    assert confirmation["result"] == "deny"
    assert confirmation["deny_message"] == "not on a Friday"
    results = [e for e in events if e["type"] == "agent.tool_result"]
    assert results, events
    assert all(r.get("is_error") for r in results), results


def test_a_long_tool_call_is_interrupted_and_the_session_archived_from_the_page(
    console_stack: LocalStack, page: Page, screenshots: Screenshots
) -> None:
    session_id = _start(console_stack, "hello", "Run: sleep 300; echo slept")
    _open(page, console_stack, session_id)
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.locator("[data-type='agent.tool_use']")).to_contain_text(
        "sleep 300", timeout=LIVE_S
    )
    expect(_status(page)).to_have_text("running")
    page.get_by_role("button", name="Interrupt").click()
    expect(timeline.locator("[data-type='user.interrupt']")).to_be_visible(timeout=LIVE_S)
    expect(_status(page)).to_have_text("idle", timeout=LIVE_S)
    screenshots("interrupted")
    # The call was stopped: what it would have printed never came.
    result = timeline.locator("[data-type='agent.tool_use'] .result").inner_text()
    assert "slept" not in result, result

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Archive").click()
    expect(_status(page)).to_have_text("terminated", timeout=LIVE_S)
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    assert _client(console_stack).beta.sessions.retrieve(session_id).archived_at is not None


def test_markup_a_model_or_a_tool_wrote_is_shown_as_text_and_never_runs(
    console_stack: LocalStack, page: Page, screenshots: Screenshots
) -> None:
    user_payload = "<img src=y onerror=\"window.pwn('user')\">"
    session_id = _start(console_stack, "hello", f"{INJECT_PREFIX}{user_payload}")
    _open(page, console_stack, session_id)
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline).to_contain_text("The tool said", timeout=LIVE_S)
    expect(timeline.locator("[data-type='session.status_idle']").last).to_contain_text("end_turn")
    screenshots("injection")

    text = timeline.inner_text()
    # Literally, as written: the user's, the model's (streamed and final) and the tool's.
    assert user_payload in text
    assert MODEL_PAYLOAD in text
    assert text.count(TOOL_PAYLOAD) >= 2  # the tool's result and the model quoting it
    # No element was made of it, and nothing ran.
    for tag in ("img", "script", "svg", "iframe", "b"):
        assert timeline.locator(tag).count() == 0, tag
    assert page.evaluate("window.__pwned") == []

    # The list's titles are text too.
    _client(console_stack).beta.sessions.update(session_id, title=user_payload)
    page.get_by_role("link", name="Sessions", exact=True).first.click()
    expect(page.get_by_role("link", name=user_payload)).to_be_visible(timeout=30_000)
    assert page.locator("table img").count() == 0
    assert page.evaluate("window.__pwned") == []


def test_a_delegated_thread_is_a_nested_lane_of_the_coordinators_timeline(
    console_stack: LocalStack, page: Page, screenshots: Screenshots
) -> None:
    session_id = _start(console_stack, COORDINATOR, "Ask your helper to say hello.")
    _open(page, console_stack, session_id)
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline).to_contain_text("The helper answered", timeout=LIVE_S)
    lane = timeline.get_by_role("region", name="Thread helper")
    # The thread's own log, followed in its lane: its agent's reply and status.
    expect(lane).to_contain_text(HELPER_REPLY, timeout=30_000)
    expect(lane.locator("[data-type='agent.message']")).to_have_count(1)
    screenshots("threads")


@pytest.fixture(autouse=True)
def _no_page_errors(page: Page) -> Any:
    """An uncaught error in the console's own script fails the test that caused it."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield
    assert errors == []
