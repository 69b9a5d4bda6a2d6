"""A scripted Claude Messages API server: the one fake Paddock accepts, because the
machines that run the tests have no internet.

It speaks the real wire format, so the official `anthropic` SDK talks to it unchanged:
`POST /v1/messages` with or without `stream: true` (SSE: message_start, content_block_*,
message_delta, message_stop, pings), text, thinking and tool_use blocks, stop reasons,
usage, and errors (429/529/500 with `retry-after`) in the API's error envelope. A *script*
decides each reply from the request it receives, so tests can script multi-turn tool use,
failures and hostile behaviour; replies depend on the conversation, not on arrival order,
so concurrent sessions each get their own script run.

    python -m paddock.testing.fakemodel --port 8000 --script demo
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# --- what a script returns -----------------------------------------------------------


@dataclass
class Text:
    text: str


@dataclass
class Thinking:
    thinking: str


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: f"toolu_{secrets.token_hex(12)}")


Block = Text | Thinking | ToolUse


@dataclass
class Reply:
    """An assistant message. `stop_reason` defaults to `tool_use` when a tool is called."""

    content: list[Block]
    stop_reason: str | None = None
    delay: float = 0.0
    """Seconds before the first byte (a slow model)."""
    chunk_delay: float = 0.0
    """Seconds between streamed deltas."""
    output_tokens: int | None = None

    @property
    def resolved_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"


@dataclass
class Fail:
    """An HTTP error in the API's envelope, as the real API sends it."""

    status: int
    retry_after: float | None = None
    message: str = ""
    delay: float = 0.0

    @property
    def error_type(self) -> str:
        return {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }.get(self.status, "api_error")


# --- what a script sees --------------------------------------------------------------


@dataclass
class ModelRequest:
    """One request as the server received it."""

    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    """`time.time()` when the request arrived."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def system_text(self) -> str:
        """The system prompt's text (a string or text blocks): tells a grader's request
        (`paddock.harness.outcomes.GRADER_SYSTEM`) from the agent's."""
        system = self.body.get("system") or ""
        if isinstance(system, str):
            return system
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))

    @property
    def assistant_turns(self) -> int:
        """Assistant messages so far: which step of a multi-turn script this is."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    def _blocks(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        content = message.get("content", [])
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    @property
    def last_user_text(self) -> str:
        """Text of the latest user message that has text (tool results excluded)."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            texts = [b.get("text", "") for b in self._blocks(message) if b.get("type") == "text"]
            if texts:
                return "\n".join(texts)
        return ""

    @property
    def first_user_text(self) -> str:
        for message in self.messages:
            if message.get("role") == "user":
                return "\n".join(
                    b.get("text", "") for b in self._blocks(message) if b.get("type") == "text"
                )
        return ""

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the latest user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return [b for b in self._blocks(message) if b.get("type") == "tool_result"]
        return []

    def tool_result_text(self, index: int = 0) -> str:
        result = self.tool_results[index]
        content = result.get("content", "")
        if isinstance(content, str):
            return content
        return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")


Script = Callable[[ModelRequest], Reply | Fail]


def turns(*steps: Reply | Fail | Callable[[ModelRequest], Reply | Fail]) -> Script:
    """A script that answers step N to a conversation with N assistant messages so far, and
    a final "Done." after the last step."""

    def script(request: ModelRequest) -> Reply | Fail:
        index = request.assistant_turns
        if index >= len(steps):
            return Reply([Text("Done.")])
        step = steps[index]
        return step(request) if callable(step) else step

    return script


def estimate_tokens(payload: Any) -> int:
    """A stable stand-in for tokenisation: about four characters a token."""
    return max(1, len(json.dumps(payload, separators=(",", ":"))) // 4)


# --- the server ----------------------------------------------------------------------


class FakeModelServer:
    """The scripted Messages API on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        script: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_delta: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.script = script
        self.host, self.port = host, port
        self.on_delta = on_delta
        """Called (in the server's thread) as each streamed delta is sent: benchmarks time
        what follows from it."""
        self.requests: list[ModelRequest] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # Running in a thread keeps the server responsive while a test's own loop is blocked.
    def start(self) -> FakeModelServer:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.start_async())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-model", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake model server did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            asyncio.run_coroutine_threadsafe(self.stop_async(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def start_async(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop_async(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @staticmethod
    def _error(status: int, error_type: str, message: str, **headers: str) -> web.Response:
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": f"req_{secrets.token_hex(12)}",
        }
        return web.json_response(body, status=status, headers=headers)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"input_tokens": estimate_tokens(body.get("messages", []))})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "invalid_request_error", "request body is not valid JSON")
        missing = [k for k in ("model", "max_tokens", "messages") if k not in body]
        if missing:
            return self._error(400, "invalid_request_error", f"{missing[0]}: Field required")
        model_request = ModelRequest(body, dict(request.headers), time.time())
        self.requests.append(model_request)
        try:
            outcome = self.script(model_request)
        except Exception as exc:  # a broken script is a test bug: make it loud, as a 500
            return self._error(500, "api_error", f"script failed: {exc!r}")
        await asyncio.sleep(outcome.delay)
        if isinstance(outcome, Fail):
            headers = {}
            if outcome.retry_after is not None:
                headers["retry-after"] = f"{outcome.retry_after:g}"
            text = outcome.message or {529: "Overloaded"}.get(outcome.status, "scripted error")
            return self._error(outcome.status, outcome.error_type, text, **headers)
        message = self._message(body, outcome)
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": f"req_{next(self._ids)}"})
        return await self._stream(request, message, outcome)

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in reply.content:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, Thinking):
                content.append(
                    {
                        "type": "thinking",
                        "thinking": block.thinking,
                        "signature": secrets.token_hex(16),
                    }
                )
            else:
                content.append(
                    {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
                )
        system = body.get("system")
        cached = 0
        if isinstance(system, list) and any("cache_control" in b for b in system):
            cached = estimate_tokens(system)  # the stable prefix is "cached" on repeat requests
        return {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": reply.resolved_stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": estimate_tokens(body["messages"]),
                "output_tokens": reply.output_tokens or estimate_tokens(content),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cached,
            },
        }

    async def _stream(
        self, request: web.Request, message: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "request-id": f"req_{next(self._ids)}",
            }
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        await send("message_start", {"type": "message_start", "message": start})
        await send("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            empty = {
                "text": {"type": "text", "text": ""},
                "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                "tool_use": {**block, "input": {}},
            }[block["type"]]
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
            for delta in _deltas(block):
                await asyncio.sleep(reply.chunk_delay)
                if self.on_delta is not None:
                    self.on_delta(delta)
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response


def _chunks(text: str, size: int = 16) -> Sequence[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        return [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
    if block["type"] == "thinking":
        return [{"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"])] + [
            {"type": "signature_delta", "signature": block["signature"]}
        ]
    return [
        {"type": "input_json_delta", "partial_json": c} for c in _chunks(json.dumps(block["input"]))
    ]


# --- the demo script -----------------------------------------------------------------

DEMO_PROGRAM = "print(len([n for n in range(2, 100) if all(n % d for d in range(2, n))]))\n"


RUN_PREFIX = "Run: "


def _run_script(request: ModelRequest) -> Reply | Fail:
    """A user message `Run: <command>`: run it with bash; if the tool call fails (the
    sandbox died under it), say so and run `echo recovered` (a fresh sandbox), then report."""
    command = request.first_user_text.removeprefix(RUN_PREFIX).strip()
    step = request.assistant_turns
    if step == 0:
        return Reply([ToolUse("bash", {"command": command})])
    result = request.tool_result_text() if request.tool_results else ""
    failed = bool(request.tool_results and request.tool_results[0].get("is_error"))
    if step == 1 and failed:
        return Reply(
            [
                Text(f"The command failed: {result[:200]}"),
                ToolUse("bash", {"command": "echo recovered"}),
            ]
        )
    return Reply([Text(f"Output: {result[:500]}")])


def demo_script(request: ModelRequest) -> Reply | Fail:
    """What `make demo` shows without an API key: write a program, run it, report. A first
    message `Run: <command>` runs that command instead (the end-to-end tests' long tool
    calls)."""
    if request.first_user_text.startswith(RUN_PREFIX):
        return _run_script(request)
    return turns(
        Reply(
            [
                Thinking("The user wants primes below 100; I will write and run a script."),
                Text("I'll write the program and run it."),
                ToolUse("write", {"file_path": "primes.py", "content": DEMO_PROGRAM}),
            ]
        ),
        Reply([ToolUse("bash", {"command": "python3 primes.py"})]),
        # The bash result ends with an exit-code line: the count is the first line.
        lambda r: Reply(
            [Text(f"There are {r.tool_result_text().splitlines()[0]} primes below 100.")]
        ),
    )(request)


# --- the end-to-end TTFT bench's script -----------------------------------------------

TTFT_REPLY = "Let me look at the workspace first, then I will answer in full. " * 3
"""About 200 characters: 13 chunks of 16, one every `TTFT_CHUNK_DELAY`."""
TTFT_CHUNK_DELAY = 0.005


def e2e_ttft_script(request: ModelRequest) -> Reply | Fail:
    """bench/e2e_ttft.py's model, on the local stack and in a cluster alike: streamed text
    and a bash call, then a short answer; a first reply with deltas that needs the sandbox
    only after it has been streamed."""
    if request.assistant_turns == 0:
        return Reply(
            [Text(TTFT_REPLY), ToolUse("bash", {"command": "true"})],
            chunk_delay=TTFT_CHUNK_DELAY,
        )
    return Reply([Text("Done.")])


SCRIPTS: dict[str, Script] = {"demo": demo_script, "e2e-ttft": e2e_ttft_script}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Scripted Claude Messages API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--script", choices=sorted(SCRIPTS), default="demo")
    args = parser.parse_args(argv)
    server = FakeModelServer(SCRIPTS[args.script], host=args.host, port=args.port)

    async def serve() -> None:
        await server.start_async()
        print(f"fake model listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
