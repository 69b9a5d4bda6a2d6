"""The harness as deployed: model calls through the credential proxy, sandboxes bound to
egress through it, and metrics that say what happened."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client import REGISTRY

from paddock.eventlog import TextBlock, UserMessageEvent, new_session_id, sandbox_requests
from paddock.harness import RetryPolicy
from paddock.testing.fakemodel import Reply, Text, ToolUse, turns
from paddock.testing.ports import wait_until_async
from paddock.testing.proxy import ProxyProcess, Secrets
from paddock.testing.sandbox import RunningSandbox, launch


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _deployed(harness, tmp_path: Path) -> tuple[Secrets, ProxyProcess, RunningSandbox]:
    """A credential proxy in front of the harness's model, and a sandbox of its own."""
    secrets = Secrets(tmp_path / "secrets")
    proxy = ProxyProcess(
        tmp_path, secrets, upstream=harness.model.url, environments={"default": {"mode": "none"}}
    ).start()
    return secrets, proxy, launch(tmp_path / "sandbox")


async def test_model_calls_and_sandbox_egress_go_through_the_proxy(
    make_harness, tmp_path: Path
) -> None:
    script = turns(
        Reply(
            [
                ToolUse(
                    "bash",
                    {
                        "command": "env | grep -i '^https_proxy=' | cut -d@ -f2; env | grep -c sk-ant || true"
                    },
                )
            ]
        ),
        lambda r: Reply([Text(r.tool_result_text())]),
    )
    harness = make_harness(script, workers=0)
    secrets, proxy, sandbox = _deployed(harness, tmp_path)
    try:
        harness.start_worker(
            model_base_url=proxy.api_url,
            proxy_admin_url=proxy.admin_url,
            # A name, as the proxy Service's: the sandbox, which has no resolver, gets the
            # address (localhost is 127.0.0.1 in /etc/hosts).
            proxy_egress_url=f"http://localhost:{proxy.egress_port}",
        )
        session = await harness.start_session("show me the proxy", bind=False)
        await harness.bind(session, sandbox)
        events = await harness.wait_idle(session)
    finally:
        sandbox.stop()
        proxy.stop()
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    # The harness sends a placeholder; the proxy replaced it with the mounted key.
    assert {r.headers["x-api-key"] for r in harness.model.requests} == {secrets.api_key}
    # The sandbox was bound to the session: its commands egress through the proxy, and no
    # key is in their environment.
    output = events[-3]["content"][0]["text"]
    assert output.splitlines()[0] == f"127.0.0.1:{proxy.egress_port}"
    assert "localhost" not in output
    assert output.splitlines()[-2] == "0"


async def test_metrics_count_model_calls_tokens_and_tools(make_harness) -> None:
    before = {
        "ttft": metric("paddock_harness_time_to_first_token_seconds_count"),
        "model": metric("paddock_harness_model_request_seconds_count"),
        "tool": metric("paddock_harness_tool_call_seconds_count", tool="bash"),
        "output": metric("paddock_harness_tokens_total", kind="output"),
        "turns": metric("paddock_harness_turns_total", stop_reason="end_turn"),
    }
    harness = make_harness(
        turns(
            Reply([ToolUse("bash", {"command": "true"})], output_tokens=7),
            Reply([Text("ok")], output_tokens=3),
        )
    )
    await harness.wait_idle(await harness.start_session("go"))
    # The worker counts the turn just after appending its idle: give it that moment.
    await wait_until_async(
        lambda: metric("paddock_harness_turns_total", stop_reason="end_turn") > before["turns"],
        timeout=5,
        what="the turn to be counted",
    )
    assert metric("paddock_harness_time_to_first_token_seconds_count") - before["ttft"] == 2
    assert metric("paddock_harness_model_request_seconds_count") - before["model"] == 2
    assert metric("paddock_harness_tool_call_seconds_count", tool="bash") - before["tool"] == 1
    assert metric("paddock_harness_tokens_total", kind="output") - before["output"] == 10
    assert metric("paddock_harness_turns_total", stop_reason="end_turn") - before["turns"] == 1


async def test_a_sandbox_that_cannot_be_bound_is_replaced_and_the_model_told(
    make_harness, tmp_path: Path
) -> None:
    """A sandbox bound to another session refuses this one: the call ends as a tool error,
    a replacement is requested, and the turn goes on (it does not fail and retry forever)."""
    script = turns(
        Reply([ToolUse("bash", {"command": "echo hi"})]),
        lambda r: Reply([Text("Seen: " + r.tool_result_text())]),
    )
    harness = make_harness(script, workers=0)
    _, proxy, sandbox = _deployed(harness, tmp_path)
    egress = f"http://127.0.0.1:{proxy.egress_port}"
    try:
        other = new_session_id()
        async with sandbox.client() as client:
            await client.bind(other, egress, proxy.mint(other, "default"))
        harness.start_worker(
            model_base_url=proxy.api_url, proxy_admin_url=proxy.admin_url, proxy_egress_url=egress
        )
        session = await harness.start_session("run it", bind=False)
        binding = await harness.bind(session, sandbox)
        events = await harness.wait_idle(session)
        requests = await harness.redis.xrange(sandbox_requests("default"))
    finally:
        sandbox.stop()
        proxy.stop()
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "cannot serve this session" in result["content"][0]["text"]
    assert events[-1]["stop_reason"] == {"type": "end_turn"}
    assert len(harness.model.requests) == 2
    assert any(binding.pod.encode() in b"".join(f.values()) for _, f in requests)


async def test_a_proxy_that_refuses_the_egress_token_ends_the_turn_after_a_few_retries(
    make_harness, tmp_path: Path
) -> None:
    """The session's environment is not (yet) in the proxy's config, so the proxy refuses
    the sandbox's egress token: the harness retries a few times with growing waits, each
    refusal a `session.error` the client sees, then ends the turn with `retries_exhausted`
    within seconds; once the proxy knows the environment, the next message works."""
    script = turns(
        Reply([ToolUse("bash", {"command": "echo first"})]),
        Reply([ToolUse("bash", {"command": "echo second"})]),
        lambda r: Reply([Text("Seen: " + r.tool_result_text())]),
    )
    harness = make_harness(script, workers=0)
    _, proxy, sandbox = _deployed(harness, tmp_path)
    policy = RetryPolicy(attempts=4, base_delay=0.2, max_delay=2.0, jitter=0.5)
    try:
        harness.start_worker(
            model_base_url=proxy.api_url,
            proxy_admin_url=proxy.admin_url,
            proxy_egress_url=f"http://127.0.0.1:{proxy.egress_port}",
            bind_retry=policy,
        )
        began = time.monotonic()
        session = await harness.start_session("run it", bind=False, environment="later")
        await harness.bind(session, sandbox)
        events = await harness.wait_idle(session, within=10)
        elapsed = time.monotonic() - began
        mints = [e for e in proxy.audit() if e["rule"] == "mint-token"]
        async with httpx.AsyncClient() as client:
            denied = (await client.get(f"{proxy.admin_url}/metrics")).text

        # The Environment reaches the proxy's config (as its ConfigMap refresh does).
        proxy.config["environments"]["later"] = {"mode": "none"}
        proxy.write_config()
        await harness.send(session, UserMessageEvent(content=[TextBlock(text="again")]))
        after = await harness.wait_idle(session, count=2, within=20)
    finally:
        sandbox.stop()
        proxy.stop()

    errors = [e["error"] for e in events if e["type"] == "session.error"]
    assert [e["retry_status"]["type"] for e in errors] == ["retrying"] * 3 + ["exhausted"]
    assert {e["type"] for e in errors} == {"unknown_error"}
    assert 'HTTP 422: environment "later" is not configured' in errors[-1]["message"]
    (result,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert "did not run" in result["content"][0]["text"]
    assert events[-1]["stop_reason"] == {"type": "retries_exhausted"}
    assert elapsed < 8
    # A bounded number of token requests, the waits between them growing.
    assert [(e["decision"], e["status"]) for e in mints] == [("deny", 422)] * 4
    assert 'paddock_proxy_requests_total{listener="admin",decision="deny"} 4' in denied
    stamps = [datetime.fromisoformat(e["ts"]).timestamp() for e in mints]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == sorted(gaps), gaps
    assert gaps[0] >= 0.09, gaps
    assert gaps[-1] > 1.5 * gaps[0], gaps
    # The session stayed usable: the next turn binds the sandbox and runs the call.
    assert after[-1]["stop_reason"] == {"type": "end_turn"}
    last = [e for e in after if e["type"] == "agent.message"][-1]
    assert last["content"][0]["text"].startswith("Seen: second")
