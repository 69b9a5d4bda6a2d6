"""A harness worker: runs the sessions of one Agent, taken from the Agent's work queue.

A worker holds no state of its own. For each claimed session it rebuilds the conversation
from the log, takes the next step (call the model, run tools, wait for the user), appends
what happened, and repeats until the session idles; then it releases the session unless
new input arrived meanwhile. Every append is fenced by the session's lease, so a worker that
stalled and lost its lease cannot write, and any other worker can resume from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anthropic
import httpx
from anthropic.types import Message
from redis.asyncio import Redis
from redis.exceptions import RedisError

from paddock.eventlog import (
    AgentCustomToolUseEvent,
    AgentMessageEvent,
    AgentThinkingEvent,
    AgentThreadContextCompactedEvent,
    AgentToolResultEvent,
    AgentToolUseEvent,
    AnyEvent,
    Claim,
    ErrorDetail,
    Evaluation,
    EventLog,
    Heartbeat,
    LeaseLost,
    ModelUsage,
    Money,
    RetryStatus,
    SandboxBinding,
    SandboxWaiter,
    SessionErrorEvent,
    SessionNotFound,
    SessionSettings,
    SessionState,
    SessionStatusIdleEvent,
    SessionStatusRunningEvent,
    SessionUsageEvent,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    StopDetails,
    StopReason,
    TextBlock,
    UsageSnapshot,
    WorkQueue,
)
from paddock.harness import metrics
from paddock.harness.model import ModelFailure, RetryPolicy, call_with_retries, stream_message
from paddock.harness.tools import READ_ONLY_TOOLS, Toolbox, toolbox
from paddock.harness.transcript import (
    AwaitUser,
    CallModel,
    EndInterrupted,
    Idle,
    RunTools,
    ToolCall,
    Transcript,
    apply,
)
from paddock.models.agent import AgentSpec
from paddock.models.common import parse_duration
from paddock.models.pricing import list_cost_cents
from paddock.sandbox.client import (
    SandboxAlreadyBound,
    SandboxClient,
    SandboxError,
    SandboxUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SYSTEM = "You are a helpful agent. Use the tools in your sandbox to do the task."
COMPACTION_REQUEST = (
    "The conversation is getting long. Write a summary that lets you continue the task "
    "without the earlier messages: the user's requests, what has been done and found, the "
    "state of files and commands, and what remains to do. Reply with the summary only."
)


@dataclass(frozen=True)
class WorkerSettings:
    agent: str
    """`<namespace>/<name>` of the Agent whose sessions this worker runs."""
    spec: AgentSpec
    worker_id: str
    model_base_url: str
    """The credential proxy's API listener: the harness sends no key, the proxy adds it."""
    proxy_admin_url: str | None = None
    """Mints egress tokens for sandboxes. None: sandboxes are used unbound (no egress)."""
    proxy_egress_url: str | None = None
    """The proxy address sandboxes use (the Agent's proxy Service)."""
    lease_ttl_ms: int = 15_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    context_window_tokens: int = 200_000
    compact_at: float = 0.8
    """Compact when the conversation is estimated above this share of the window."""


class Interrupted(Exception):
    """The user interrupted, or the lease was lost, while a call was running."""


class Worker:
    """Claims sessions of one Agent and runs them, up to `spec.harness.concurrency` at once."""

    def __init__(self, settings: WorkerSettings, redis: Redis) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.log = EventLog(redis)
        self.queue = WorkQueue(self.log, settings.agent, lease_ttl_ms=settings.lease_ttl_ms)
        self.state = SessionState(redis)
        self.sandboxes = SandboxWaiter(self.state)
        self.toolbox: Toolbox = toolbox(settings.spec)
        self.model = anthropic.AsyncAnthropic(
            base_url=settings.model_base_url,
            api_key="injected-by-the-credential-proxy",
            max_retries=0,
            timeout=parse_duration(settings.spec.limits.model_timeout),
        )
        self.http = httpx.AsyncClient(timeout=10)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve sessions until ``stop`` is set; then hand unfinished sessions back."""
        slots = asyncio.Semaphore(self.spec.harness.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                await slots.acquire()
                try:
                    claim = await self.queue.claim(self.settings.worker_id, block_ms=500)
                except Exception:
                    slots.release()
                    log.exception("claiming work failed; retrying")
                    await asyncio.sleep(1)
                    continue
                if claim is None:
                    slots.release()
                    continue
                task = asyncio.create_task(self.serve(claim))
                running.add(task)
                task.add_done_callback(lambda t: (running.discard(t), slots.release()))
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self.sandboxes.close()
            await self.http.aclose()
            await self.model.close()

    async def serve(self, claim: Claim) -> None:
        """Run one claimed session until it is idle and no input is left unhandled."""
        if claim.reclaimed:
            metrics.RESUMES.inc()
        try:
            async with self.queue.heartbeat(claim) as beat:
                await SessionRun(self, claim, beat).run()
        except (LeaseLost, SessionNotFound):
            log.info("session %s: lease lost or session deleted; stopping", claim.session_id)
        except asyncio.CancelledError:
            # Shutdown: let another worker continue at once instead of after the lease TTL.
            await asyncio.shield(self._hand_back(claim))
            raise
        except Exception:
            log.exception("session %s: worker failed; handing it back", claim.session_id)
            await self._hand_back(claim)

    async def _hand_back(self, claim: Claim) -> None:
        try:
            await self.queue.hand_back(claim)
        except Exception:
            log.warning(
                "session %s: could not hand back; it is reclaimed after the lease TTL",
                claim.session_id,
            )

    async def proxy_token(self, session_id: str, environment: str | None) -> str:
        response = await self.http.post(
            f"{self.settings.proxy_admin_url}/v1/session-tokens",
            json={"session_id": session_id, "environment": environment or "default"},
        )
        response.raise_for_status()
        return str(response.json()["token"])


class SessionRun:
    """One worker's stint on one session."""

    def __init__(self, worker: Worker, claim: Claim, beat: Heartbeat) -> None:
        self.w = worker
        self.claim = claim
        self.beat = beat
        self.session_id = claim.session_id
        self.t = Transcript()
        self.position: str | None = None
        self.settings: SessionSettings | None = None
        self.sandbox_clients: dict[str, SandboxClient] = {}
        self.latest_interrupt = ""
        self.interrupt_seen = asyncio.Event()

    # --- log access ----------------------------------------------------------------

    async def sync(self) -> None:
        """Fold every event after the last one folded. Our own appends come back this way
        too, so user events that landed between them are never skipped."""
        for event in await self.w.log.replay(self.session_id, after=self.position):
            apply(self.t, event.model_dump(mode="json", exclude_none=True))
            self.position = event.id

    async def emit(self, *events: AnyEvent, key: str | None = None) -> list[AnyEvent]:
        stored = await self.w.log.append(self.session_id, events, fence=self.claim.lease, key=key)
        await self.sync()
        return stored

    # --- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        self.settings = await self.w.state.settings(self.session_id)
        await self.sync()  # a claimed session has at least the input that woke it
        assert self.position is not None
        watcher = asyncio.ensure_future(self.watch_interrupts())
        try:
            while True:
                await self.sync()
                await self.work()
                if await self.w.queue.finish(self.claim, handled_through=self.position):
                    return
        finally:
            # Not awaited: a blocking read ends by itself within its block time.
            watcher.cancel()
            watcher.add_done_callback(lambda t: t.cancelled() or t.exception())
            for client in self.sandbox_clients.values():
                await client.aclose()

    async def work(self) -> None:
        """Take steps until the session waits for the user."""
        while not self.beat.lost.is_set():
            step = self.t.next_step()
            if isinstance(step, Idle):
                return
            if isinstance(step, AwaitUser):
                if self.t.status != "idle" or self.t.waiting_on != step.event_ids:
                    await self.idle("requires_action", event_ids=step.event_ids)
                return
            if isinstance(step, EndInterrupted):
                await self.end_interrupted(step.open_calls)
                continue
            if self.t.status != "running":
                await self.emit(SessionStatusRunningEvent())
            if isinstance(step, CallModel):
                await self.model_step()
            elif isinstance(step, RunTools):
                await self.tool_step(step)
            await self.sync()
        raise LeaseLost(self.session_id, None)

    async def idle(
        self,
        reason: str,
        *extra: AnyEvent,
        event_ids: list[str] | None = None,
        details: StopDetails | None = None,
        key: str | None = None,
    ) -> None:
        stop = StopReason(type=reason, event_ids=event_ids)  # type: ignore[arg-type]
        await self.emit(
            *extra, SessionStatusIdleEvent(stop_reason=stop, stop_details=details), key=key
        )
        metrics.TURNS.labels(reason).inc()

    async def end_interrupted(self, open_calls: list[ToolCall]) -> None:
        results = [
            AgentToolResultEvent(
                tool_use_id=c.id,
                is_error=True,
                content=[TextBlock(text="Interrupted by the user before it finished.")],
            )
            for c in open_calls
        ]
        await self.idle("end_turn", *results)

    async def interruptible(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call``, cancelling it when a `user.interrupt` newer than the log position at
        the start arrives, or when the lease is lost."""
        start = self.position or ""
        task = asyncio.ensure_future(call)
        while not task.done():
            self.interrupt_seen.clear()
            if self.latest_interrupt > start or self.beat.lost.is_set():
                break
            waiters = {
                asyncio.ensure_future(self.interrupt_seen.wait()),
                asyncio.ensure_future(self.beat.lost.wait()),
            }
            await asyncio.wait({task, *waiters}, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise Interrupted

    async def watch_interrupts(self) -> None:
        """Follow the log for `user.interrupt` events for as long as the run lasts (one
        blocking read per session, not one per call)."""
        after = self.position or "$"
        while True:
            tail = self.w.log.tail(self.session_id, after=after, types=["user.interrupt"])
            try:
                async with tail:
                    async for event in tail:
                        assert event.id is not None
                        self.latest_interrupt = max(self.latest_interrupt, event.id)
                        self.interrupt_seen.set()
                    return
            except RedisError as exc:
                log.warning(
                    "session %s: interrupt watch failed (%r); retrying", self.session_id, exc
                )
                after = tail.position or after
                await asyncio.sleep(0.5)

    # --- the model -----------------------------------------------------------------

    async def model_step(self) -> None:
        spec = self.w.spec
        if self.t.model_calls_this_turn >= spec.limits.max_turns:
            error = ErrorDetail(
                type="tool_use_limit_reached_error",
                message=f"the turn reached the limit of {spec.limits.max_turns} model requests",
                retry_status=RetryStatus(type="exhausted"),
            )
            await self.idle("retries_exhausted", SessionErrorEvent(error=error))
            return
        if self.budget_reached():
            await self.idle("budget_reached", SessionUsageEvent(usage=self.usage_snapshot()))
            return
        if self.needs_compaction():
            await self.compact()
            return
        (start,) = await self.emit(SpanModelRequestStartEvent())
        began = time.monotonic()
        try:
            message = await self.interruptible(self.call_model(self.request()))
        except Interrupted:
            await self.emit(self.span_end(start.id, None), key=f"response:{start.id}")
            return
        if message is None:
            await self.idle(
                "retries_exhausted", self.span_end(start.id, None), key=f"response:{start.id}"
            )
            return
        metrics.MODEL_LATENCY.observe(time.monotonic() - began)
        events, stop = self.response_events(message)
        events.append(self.span_end(start.id, message))
        if stop is None:
            await self.emit(*events, key=f"response:{start.id}")
        elif stop == "refusal":
            await self.idle("refusal", *events, details=StopDetails(), key=f"response:{start.id}")
        else:
            await self.idle(stop, *events, key=f"response:{start.id}")

    def request(self) -> dict[str, Any]:
        spec = self.w.spec
        # The system prompt and the tools are the stable prefix: cache them.
        request: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": spec.limits.max_tokens,
            "system": [
                {
                    "type": "text",
                    "text": spec.system or DEFAULT_SYSTEM,
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "messages": self.t.messages,
        }
        if self.w.toolbox.definitions:
            tools = [dict(d) for d in self.w.toolbox.definitions]
            tools[-1]["cache_control"] = {"type": "ephemeral"}
            request["tools"] = tools
        return request

    async def call_model(self, request: dict[str, Any]) -> Message | None:
        began = time.monotonic()

        def first_token() -> None:
            metrics.TIME_TO_FIRST_TOKEN.observe(time.monotonic() - began)

        async def on_failure(failure: ModelFailure, will_retry: bool) -> None:
            metrics.MODEL_ERRORS.labels(failure.error_type).inc()
            if will_retry:
                metrics.MODEL_RETRIES.labels(failure.error_type).inc()
            status = RetryStatus(type="retrying" if will_retry else "exhausted")
            await self.emit(
                SessionErrorEvent(
                    error=ErrorDetail(
                        type=failure.error_type, message=failure.message, retry_status=status
                    )
                )
            )

        return await call_with_retries(
            lambda: stream_message(self.w.model, request, first_token),
            self.w.settings.retry,
            on_failure,
        )

    def response_events(self, message: Message) -> tuple[list[AnyEvent], str | None]:
        """The events of one model response, and the stop reason if the turn ends with it."""
        events: list[AnyEvent] = []
        texts: list[TextBlock] = []

        def flush() -> None:
            if texts:
                events.append(AgentMessageEvent(content=list(texts)))
                texts.clear()

        calls = False
        for block in message.content:
            if block.type == "text":
                texts.append(TextBlock(text=block.text))
            elif block.type in ("thinking", "redacted_thinking"):
                flush()
                events.append(AgentThinkingEvent())
            elif block.type == "tool_use":
                flush()
                calls = True
                events.append(self.tool_use_event(block.name, dict(block.input)))  # type: ignore[arg-type]
        flush()
        usage = message.usage
        metrics.TOKENS.labels("input").inc(usage.input_tokens)
        metrics.TOKENS.labels("output").inc(usage.output_tokens)
        if calls:
            return events, None
        return events, "refusal" if message.stop_reason == "refusal" else "end_turn"

    def tool_use_event(self, name: str, tool_input: dict[str, Any]) -> AnyEvent:
        policy = self.w.toolbox.policy(name)
        if policy is not None and policy.kind == "custom":
            return AgentCustomToolUseEvent(name=name, input=tool_input)
        ask = policy is not None and policy.permission == "ask"
        return AgentToolUseEvent(
            name=name,
            input=tool_input,
            evaluated_permission="ask" if ask else "allow",
            evaluation=Evaluation(type="always_ask" if ask else "always_allow"),
        )

    @staticmethod
    def span_end(start_id: str | None, message: Message | None) -> SpanModelRequestEndEvent:
        usage = message.usage if message else None
        return SpanModelRequestEndEvent(
            model_request_start_id=start_id or "",
            is_error=message is None,
            model_usage=ModelUsage(
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                cache_creation_input_tokens=(usage.cache_creation_input_tokens or 0)
                if usage
                else 0,
                cache_read_input_tokens=(usage.cache_read_input_tokens or 0) if usage else 0,
            ),
        )

    # --- budgets and compaction ------------------------------------------------------

    def usage_snapshot(self) -> UsageSnapshot:
        usage = self.t.usage
        cents = list_cost_cents(self.w.spec.model, usage)
        return UsageSnapshot(
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            cache_read_input_tokens=usage.get("cache_read_input_tokens", 0),
            list_cost=None if cents is None else Money(amount=str(cents), currency="USD"),
        )

    def budget_reached(self) -> bool:
        limits = self.w.spec.limits
        budget = self.settings.budget if self.settings else None
        max_tokens = (budget and budget.max_tokens) or limits.max_session_tokens
        max_cost = (budget and budget.max_list_cost) or limits.max_list_cost
        usage = self.t.usage
        used = sum(
            usage.get(k, 0)
            for k in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            )
        )
        if max_tokens is not None and used >= max_tokens:
            return True
        if max_cost is not None:
            cents = list_cost_cents(self.w.spec.model, usage)
            return cents is None or cents >= int(max_cost.amount)
        return False

    def needs_compaction(self) -> bool:
        size = len(str(self.t.messages)) // 4
        return (
            len(self.t.messages) > 2
            and size > self.w.settings.compact_at * self.w.settings.context_window_tokens
        )

    async def compact(self) -> None:
        request = self.request()
        messages = [dict(m, content=list(m["content"])) for m in self.t.messages]
        instruction = {"type": "text", "text": COMPACTION_REQUEST}
        if messages[-1]["role"] == "user":
            messages[-1]["content"].append(instruction)
        else:
            messages.append({"role": "user", "content": [instruction]})
        request["messages"] = messages
        (start,) = await self.emit(SpanModelRequestStartEvent())
        try:
            message = await self.interruptible(self.call_model(request))
        except Interrupted:
            await self.emit(self.span_end(start.id, None))
            return
        if message is None:
            await self.idle("retries_exhausted", self.span_end(start.id, None))
            return
        summary = "\n".join(b.text for b in message.content if b.type == "text")
        await self.emit(
            self.span_end(start.id, message),
            AgentThreadContextCompactedEvent(summary=summary),
            key=f"response:{start.id}",
        )

    # --- tools ---------------------------------------------------------------------

    async def tool_step(self, step: RunTools) -> None:
        for call in step.denied:
            reason = call.deny_message or "no reason given"
            await self.emit(
                AgentToolResultEvent(
                    tool_use_id=call.id,
                    is_error=True,
                    content=[TextBlock(text=f"The user denied this tool call: {reason}")],
                ),
                key=f"result:{call.id}",
            )
        for call in step.run:
            began = time.monotonic()
            try:
                text, is_error = await self.execute(call)
            except Interrupted:
                return
            metrics.TOOL_LATENCY.labels(call.name).observe(time.monotonic() - began)
            await self.emit(
                AgentToolResultEvent(
                    tool_use_id=call.id,
                    is_error=is_error,
                    content=[TextBlock(text=text)],
                ),
                key=f"result:{call.id}",
            )

    async def execute(self, call: ToolCall) -> tuple[str, bool]:
        """Run a built-in call in the session's sandbox: (result text, is_error)."""
        policy = self.w.toolbox.policy(call.name)
        if policy is None or policy.kind != "builtin":
            return f"Unknown tool {call.name!r}.", True
        binding = await self.sandbox()
        if binding is None:
            wait = self.w.spec.limits.sandbox_wait_timeout
            return f"No sandbox became available within {wait}; the call did not run.", True
        started_in = await self.w.state.started_in(self.session_id, call.id)
        if (
            started_in is not None
            and started_in != binding.pod
            and call.name not in READ_ONLY_TOOLS
        ):
            # Another worker started it in a sandbox that is gone: it may or may not have run.
            return (
                "This call was interrupted by an infrastructure failure and its outcome is "
                "unknown: it may or may not have taken effect. Check the state before "
                "running it again."
            ), True
        # A retry in the same sandbox is safe: the sandbox runs each call id at most once.
        await self.w.state.mark_started(self.session_id, call.id, binding.pod)
        timeout = parse_duration(self.w.spec.limits.tool_timeout)
        try:
            # Binding fails like a call does (a sandbox bound elsewhere, or broken): the
            # sandbox is replaced and the model told, instead of the turn failing and retrying.
            client = await self.client(binding)
            result = await self.interruptible(
                client.call(call.name, call.input, call_id=call.id, timeout=timeout)
            )
        except Interrupted:
            # A user interrupt stops the call. A lost lease does not: the session's next
            # worker resumes this very call id in this sandbox and takes its result.
            if not self.beat.lost.is_set():
                await self._cancel(client, call.id)
            raise
        except SandboxError as exc:
            if not (isinstance(exc, SandboxAlreadyBound) or exc.status >= 500):
                return f"The sandbox refused the call: {exc.message}", True
            await self._replace(binding)
            return (
                f"The sandbox cannot serve this session ({exc}); a fresh sandbox is being prepared.",
                True,
            )
        except SandboxUnavailable as exc:
            await self._replace(binding)
            return (
                f"The sandbox failed during this call ({exc}); its outcome is unknown. A "
                "fresh sandbox is being prepared: files written earlier may be gone."
            ), True
        text = "\n".join(block.text for block in result.content if block.type == "text")
        return text, result.is_error

    async def _replace(self, binding: SandboxBinding) -> None:
        await self.w.state.request_sandbox(self.session_id, dead_pod=binding.pod)
        client = self.sandbox_clients.pop(binding.pod, None)
        if client is not None:
            await client.aclose()

    @staticmethod
    async def _cancel(client: SandboxClient, call_id: str) -> None:
        try:
            await client.cancel(call_id)
        except (SandboxUnavailable, SandboxError):
            log.warning("could not cancel call %s in its sandbox", call_id)

    async def sandbox(self) -> SandboxBinding | None:
        """The session's sandbox, waiting for the operator to bind one (first tool call only:
        the model was never kept waiting for it)."""
        binding = await self.w.state.sandbox(self.session_id)
        if binding is not None:
            return binding
        await self.w.state.request_sandbox(self.session_id)
        timeout = parse_duration(self.w.spec.limits.sandbox_wait_timeout)
        return await self.w.sandboxes.wait(self.session_id, timeout)

    async def client(self, binding: SandboxBinding) -> SandboxClient:
        client = self.sandbox_clients.get(binding.pod)
        if client is not None:
            return client
        client = SandboxClient(binding.url, binding.token)
        if self.w.settings.proxy_admin_url and self.w.settings.proxy_egress_url:
            environment = self.settings.environment if self.settings else None
            settings = self.settings or SessionSettings(namespace="", name="")
            await client.bind(
                self.session_id,
                self.w.settings.proxy_egress_url,
                await self.w.proxy_token(self.session_id, environment),
                repositories=settings.repositories,
                files=settings.files,
                git_credential_hosts=[c.host for c in self.w.spec.credentials.hosts],
            )
        self.sandbox_clients[binding.pod] = client
        return client
