"""The scripted Messages API speaks the wire format the official SDK expects."""

from __future__ import annotations

import time

import anthropic
import pytest
import yaml

from paddock.testing.cluster import fakemodel_manifest
from paddock.testing.fakemodel import (
    SCRIPTS,
    TTFT_REPLY,
    Fail,
    FakeModelServer,
    ModelRequest,
    Reply,
    Text,
    Thinking,
    ToolUse,
    demo_script,
    turns,
)


def client(server: FakeModelServer, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=retries)


def test_streamed_tool_use_and_follow_up_turn() -> None:
    script = turns(
        Reply([Thinking("plan"), Text("Looking."), ToolUse("bash", {"command": "ls -la"})]),
        lambda r: Reply([Text(f"I saw {r.tool_result_text()}")]),
    )
    with FakeModelServer(script) as server:
        sdk = client(server)
        messages = [{"role": "user", "content": "list files"}]
        texts = []
        with sdk.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=messages
        ) as stream:
            texts = list(stream.text_stream)
            first = stream.get_final_message()
        assert "".join(texts) == "Looking."
        assert first.stop_reason == "tool_use"
        assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
        tool = first.content[2]
        assert (tool.name, tool.input) == ("bash", {"command": "ls -la"})
        assert first.usage.input_tokens > 0
        assert first.usage.output_tokens > 0

        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "a.txt"}],
            },
        ]
        second = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=messages)
        assert second.stop_reason == "end_turn"
        assert second.content[0].text == "I saw a.txt"
        assert server.requests[1].assistant_turns == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, anthropic.RateLimitError),
        (529, anthropic.InternalServerError),
        (500, anthropic.InternalServerError),
    ],
)
def test_errors_use_the_api_envelope(status: int, error: type[Exception]) -> None:
    with (
        FakeModelServer(lambda r: Fail(status, retry_after=3)) as server,
        pytest.raises(error) as raised,
    ):
        client(server).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == status
    assert raised.value.body["type"] == "error"
    assert raised.value.response.headers["retry-after"] == "3"


def test_sdk_retries_honour_retry_after() -> None:
    calls: list[float] = []

    def script(request: ModelRequest) -> Reply | Fail:
        calls.append(time.monotonic())
        return Fail(529, retry_after=0.5) if len(calls) == 1 else Reply([Text("ok")])

    with FakeModelServer(script) as server:
        reply = client(server, retries=2).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert reply.content[0].text == "ok"
    assert calls[1] - calls[0] >= 0.45


def test_malformed_requests_get_invalid_request_errors() -> None:
    with (
        FakeModelServer(demo_script) as server,
        pytest.raises(anthropic.BadRequestError, match="max_tokens"),
    ):
        client(server).post("/v1/messages", body={"model": "m", "messages": []}, cast_to=object)


def test_demo_script_writes_runs_and_reports() -> None:
    first = demo_script(ModelRequest({"messages": [{"role": "user", "content": "go"}]}, {}, 0))
    assert isinstance(first, Reply)
    assert [type(b).__name__ for b in first.content] == ["Thinking", "Text", "ToolUse"]
    last = demo_script(
        ModelRequest(
            {
                "messages": [
                    {"role": "user", "content": "go"},
                    {"role": "assistant", "content": "w"},
                    {"role": "user", "content": [{"type": "tool_result", "content": "ok"}]},
                    {"role": "assistant", "content": "r"},
                    {"role": "user", "content": [{"type": "tool_result", "content": "25\n"}]},
                ]
            },
            {},
            0,
        )
    )
    assert last.content[0].text == "There are 25 primes below 100."


def test_e2e_ttft_script_streams_its_text_in_chunks_before_the_bash_call() -> None:
    """bench/e2e_ttft.py's model: deltas to preview before a tool call that needs the
    sandbox, then an answer that ends the turn."""
    with FakeModelServer(SCRIPTS["e2e-ttft"]) as server:
        sdk = client(server)
        messages = [{"role": "user", "content": "go"}]
        with sdk.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=messages
        ) as stream:
            texts = list(stream.text_stream)
            first = stream.get_final_message()
        assert len(texts) > 10
        assert "".join(texts) == TTFT_REPLY
        assert [b.type for b in first.content] == ["text", "tool_use"]
        assert first.content[1].name == "bash"
        tool = first.content[1]
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": ""}],
            },
        ]
        second = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=messages)
        assert second.stop_reason == "end_turn"


def test_the_in_cluster_scripted_model_runs_the_script_the_installer_names() -> None:
    documents = list(yaml.safe_load_all(fakemodel_manifest("paddock/paddock:1.2.3", "e2e-ttft")))
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "paddock/paddock:1.2.3"
    assert container["args"][container["args"].index("--script") + 1] == "e2e-ttft"
    assert {d["kind"] for d in documents} == {"Deployment", "Service"}
    with pytest.raises(ValueError, match="no scripted-model script 'nope'"):
        fakemodel_manifest("paddock/paddock:1.2.3", "nope")
