"""A harness worker: runs the sessions of one Agent, taken from the Agent's work queue.

A worker holds no state of its own. For each claimed session it rebuilds the conversation
from the log, takes the next step (call the model, run tools, wait for the user), appends
what happened, and repeats until the session idles; then it releases the session unless
new input arrived meanwhile. Every append is fenced by the session's lease, so a worker that
stalled and lost its lease cannot write, and any other worker can resume from the log.

This module is the turn loop; the steps are `ModelStep` (one model request) and the tool
calls of `SandboxSession`, stopped by `budget` limits and by `Interrupts`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anthropic
import httpx
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentMcpToolResultEvent,
    AgentToolResultEvent,
    AnyEvent,
    BeatThread,
    Claim,
    EventLog,
    Heartbeat,
    LeaseLost,
    SandboxWaiter,
    SessionNotFound,
    SessionSettings,
    SessionState,
    SessionStatusRunningEvent,
    TextBlock,
    WorkQueue,
    tenant_of,
)
from paddock.harness import metrics
from paddock.harness.interrupts import Interrupted, Interrupts
from paddock.harness.mcp import McpClients, McpSession
from paddock.harness.modelstep import ModelStep
from paddock.harness.outcomes import Grader
from paddock.harness.retries import Failure, session_error
from paddock.harness.sandboxsession import EgressUnavailable, SandboxSession
from paddock.harness.sessionlog import SessionLog
from paddock.harness.settings import WorkerSettings, session_worker_settings
from paddock.harness.threads import Threads
from paddock.harness.tools import Toolbox, toolbox
from paddock.harness.transcript import (
    AwaitUser,
    CallModel,
    EndInterrupted,
    Evaluate,
    Idle,
    RunTools,
    ToolCall,
)
from paddock.models import parse_duration

log = logging.getLogger(__name__)


class Worker:
    """Claims sessions of one Agent and runs them, up to `spec.harness.concurrency` at once."""

    def __init__(
        self, settings: WorkerSettings, redis: Redis, *, beats: BeatThread | None = None
    ) -> None:
        """``beats``: renew leases from that thread (``python -m paddock.harness`` does)."""
        self.settings = settings
        self.spec = settings.spec
        # A worker serves one Agent, so one tenant: its Redis user reaches no other.
        tenant = tenant_of(settings.agent)
        self.log = EventLog(redis, tenant)
        self.queue = WorkQueue(
            self.log, settings.agent, lease_ttl_ms=settings.lease_ttl_ms, beats=beats
        )
        self.state = SessionState(redis, tenant)
        self.sandboxes = SandboxWaiter(self.state)
        self.toolbox: Toolbox = toolbox(settings.spec)
        self.model = anthropic.AsyncAnthropic(
            base_url=settings.model_base_url,
            api_key="injected-by-the-credential-proxy",
            max_retries=0,
            timeout=parse_duration(settings.spec.limits.model_timeout),
        )
        self.http = httpx.AsyncClient(timeout=10)
        self.mcp = McpClients(settings.model_base_url, settings.mcp_timeout)
        self.failures: dict[str, int] = {}
        """Failed runs in a row of each session (see `SessionRun.failed`)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Serve sessions until ``stop`` is set; then hand unfinished sessions back."""
        slots = asyncio.Semaphore(self.spec.harness.concurrency)
        running: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

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
                task.add_done_callback(done)
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
            if claim.idle_s is not None:
                metrics.TAKEOVER_SECONDS.observe(claim.idle_s)
        try:
            async with self.queue.heartbeat(claim) as beat:
                settings = await self.state.settings(claim.session_id)
                run = SessionRun(self, claim, beat, settings)
                try:
                    await run.run()
                    self.failures.pop(claim.session_id, None)
                    return
                except (LeaseLost, SessionNotFound):
                    raise
                except Exception as exc:
                    log.exception("session %s: worker failed", claim.session_id)
                    if await run.failed(exc):
                        return
            await self._hand_back(claim)
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


class SessionRun:
    """One worker's stint on one session: the turn loop."""

    def __init__(
        self, worker: Worker, claim: Claim, beat: Heartbeat, settings: SessionSettings | None
    ) -> None:
        self.worker = worker
        self.claim = claim
        self.beat = beat
        self.session = SessionLog(worker.log, claim)
        self.interrupts = Interrupts(self.session, beat.lost)
        # The session's Agent version, whatever version this worker's pod runs.
        run_settings = session_worker_settings(worker.settings, settings)
        self.toolbox = (
            worker.toolbox if run_settings is worker.settings else toolbox(run_settings.spec)
        )
        self.mcp = McpSession(
            worker.mcp,
            run_settings.spec,
            self.toolbox,
            self.session,
            worker.state,
            settings,
            self.interrupts,
            parse_duration(run_settings.spec.limits.tool_timeout),
        )
        self.model_step = ModelStep(
            self.session,
            self.interrupts,
            worker.model,
            self.toolbox,
            run_settings,
            settings,
            self.mcp.toolbox if run_settings.spec.tools.mcp else None,
        )
        self.grader = Grader(self.session, self.interrupts, worker.model, run_settings)
        self.threads = (
            Threads(
                run_settings.spec.multiagent,
                worker.log,
                worker.state,
                self.session,
                settings,
                self.interrupts,
            )
            if run_settings.spec.multiagent
            else None
        )
        self.sandbox = SandboxSession(
            # A thread too: its sandbox is its own, bound to its own session id.
            claim.session_id,
            worker.state,
            worker.sandboxes,
            worker.http,
            run_settings,
            settings,
            self.interrupts,
            self.session,
        )

    async def run(self) -> None:
        """Work until the session waits for the user, then finish the claim; take up input
        that arrived meanwhile instead."""
        await self.session.sync()  # a claimed session has at least the input that woke it
        assert self.session.position is not None
        watcher = asyncio.ensure_future(self.interrupts.watch())
        try:
            while True:
                await self.work()
                # The turn is over: what it left in the outputs directory is for the user.
                await self.sandbox.collect_outputs()
                handled = self.session.position
                if await self.worker.queue.finish(self.claim, handled_through=handled):
                    return
                # Input arrived meanwhile (the first pass is synced above: one read fewer).
                await self.session.sync()
        finally:
            # Not awaited: a blocking read ends by itself within its block time.
            watcher.cancel()
            watcher.add_done_callback(lambda t: t.cancelled() or t.exception())
            await self.sandbox.close()

    async def failed(self, exc: Exception) -> bool:
        """After an error the turn loop does not handle (a bug, a broken dependency): report
        it as a `session.error` and hand the session back only after a backoff wait, holding
        the lease meanwhile, so that a failure that repeats never spins; once the retries are
        exhausted, end the turn with `retries_exhausted` (the next `user.message` starts a
        new one). True when the claim is finished."""
        failures, session_id = self.worker.failures, self.claim.session_id
        attempt = failures.get(session_id, 0)
        policy = self.worker.settings.retry
        will_retry = attempt + 1 < policy.attempts
        failure = Failure("unknown_error", f"the harness worker failed: {exc!r}", will_retry)
        failures[session_id] = attempt + 1
        try:
            await self.session.emit(session_error(failure, will_retry))
            if not will_retry:
                failures.pop(session_id, None)
                await self.session.idle("retries_exhausted")
                assert self.session.position is not None
                return await self.worker.queue.finish(
                    self.claim, handled_through=self.session.position
                )
        except (LeaseLost, SessionNotFound):
            raise
        except Exception:
            log.exception("session %s: could not report the failure", session_id)
        await asyncio.sleep(policy.delay(attempt, None))
        return False

    async def work(self) -> None:
        """Take steps until the session waits for the user."""
        transcript = self.session.transcript
        while not self.beat.lost.is_set():
            step = transcript.next_step()
            if isinstance(step, Idle):
                return
            if isinstance(step, AwaitUser):
                if transcript.status != "idle" or transcript.waiting_on != step.event_ids:
                    await self.session.idle("requires_action", event_ids=step.event_ids)
                return
            if isinstance(step, EndInterrupted):
                await self.end_interrupted(step.open_calls)
                continue
            if transcript.status != "running":
                await self.session.emit(SessionStatusRunningEvent())
            appends = self.session.appends
            if isinstance(step, CallModel):
                await self.model_step.run()
            elif isinstance(step, RunTools):
                await self.tool_step(step)
            elif isinstance(step, Evaluate):
                await self.grader.evaluate(step.outcome)
            # A step that appended has folded the log up to its last append, and the next
            # append folds whatever lands after it before anything is built from the
            # transcript (`SessionLog.emit`); finishing the turn refuses while input is
            # unfolded (`WorkQueue.finish`). A step that appended nothing, or one that an
            # interrupt cut short, reads the log, or the loop would not see why.
            if self.session.appends == appends or self.interrupts.latest > (
                self.session.position or ""
            ):
                await self.session.sync()
        raise LeaseLost(self.claim.session_id, None)

    async def end_interrupted(self, open_calls: list[ToolCall]) -> None:
        results = [
            result_event(c, "Interrupted by the user before it finished.", True) for c in open_calls
        ]
        await self.session.idle("end_turn", *results)

    async def tool_step(self, step: RunTools) -> None:
        """Answer denied calls, then run the allowed ones in order, each result appended at
        most once (keyed by the call id)."""
        for call in step.denied:
            reason = call.deny_message or "no reason given"
            await self.answer(call, f"The user denied this tool call: {reason}", True)
        delegated = [c for c in step.run if self.delegates(c)]
        if delegated:
            assert self.threads is not None
            if not await self.threads.run_all(delegated, self.answer):
                return
        calls = [c for c in step.run if c not in delegated]
        for index, call in enumerate(calls):
            began = time.monotonic()
            try:
                text, is_error = await self.run_tool(call)
            except Interrupted:
                return
            except EgressUnavailable as exc:
                await self.give_up(calls[index:], str(exc))
                return
            metrics.TOOL_LATENCY.labels(call.name).observe(time.monotonic() - began)
            await self.answer(call, text, is_error)

    def delegates(self, call: ToolCall) -> bool:
        """Whether ``call`` is a coordinator's delegation call (run in a thread)."""
        policy = self.toolbox.policy(call.name)
        return call.mcp_server is None and policy is not None and policy.kind == "delegate"

    async def answer(self, call: ToolCall, text: str, is_error: bool) -> None:
        """Append the call's result, at most once (keyed by the call id)."""
        await self.session.emit(result_event(call, text, is_error), key=f"result:{call.id}")

    async def give_up(self, calls: list[ToolCall], reason: str) -> None:
        """End the turn with `retries_exhausted` (the `session.error` that says why is in the
        log), the first call answered with the reason and the rest as not run, so that the
        session stays usable: the next `user.message` starts a new turn."""
        for call in calls:
            text = reason if call is calls[0] else "An earlier call of this turn failed."
            await self.answer(call, f"The call did not run: {text}", True)
        await self.session.idle("retries_exhausted")

    async def run_tool(self, call: ToolCall) -> tuple[str, bool]:
        """(result text, is_error) of a call: built-in tools run in the sandbox, MCP tools on
        their server (through the proxy)."""
        if call.mcp_server is not None:
            return await self.mcp.execute(call)
        policy = self.toolbox.policy(call.name)
        if policy is None or policy.kind != "builtin":
            return f"Unknown tool {call.name!r}.", True
        return await self.sandbox.execute(call)


def result_event(call: ToolCall, text: str, is_error: bool) -> AnyEvent:
    """The result of ``call``: `agent.mcp_tool_result` for an MCP call, else
    `agent.tool_result`."""
    if call.mcp_server is not None:
        return AgentMcpToolResultEvent(
            mcp_tool_use_id=call.id, is_error=is_error, content=[TextBlock(text=text)]
        )
    return AgentToolResultEvent(
        tool_use_id=call.id, is_error=is_error, content=[TextBlock(text=text)]
    )
