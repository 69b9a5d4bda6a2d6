"""A claimed session's log as its worker sees it: the transcript folded from the events,
and appends fenced by the claim's lease."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paddock.eventlog import (
    AnyEvent,
    Claim,
    EventLog,
    SessionStatusIdleEvent,
    StopDetails,
    StopReason,
)
from paddock.harness import metrics
from paddock.harness.transcript import Transcript, apply


class SessionLog:
    """The log of one claimed session, folded into a `Transcript` up to `position`."""

    def __init__(self, log: EventLog, claim: Claim) -> None:
        self.log = log
        self.claim = claim
        self.session_id = claim.session_id
        self.transcript = Transcript()
        self.position: str | None = None
        """The id of the last event folded into the transcript."""
        self.appends = 0
        """Appends through `emit` so far (the turn loop syncs after a step without any)."""
        self._folding = asyncio.Lock()

    async def sync(self) -> None:
        """Fold every event after the last one folded."""
        # Parallel delegation calls (paddock.harness.threads) emit concurrently: one fold
        # at a time, or two would fold the same events twice.
        async with self._folding:
            self._fold(await self.log.replay(self.session_id, after=self.position))

    def _fold(self, events: Sequence[AnyEvent]) -> None:
        for event in events:
            apply(self.transcript, event.model_dump(mode="json", exclude_none=True))
            self.position = event.id

    async def emit(
        self, *events: AnyEvent, key: str | None = None, reserved: Sequence[str] = ()
    ) -> list[AnyEvent]:
        """Append as the session's worker (``LeaseLost`` once the lease is gone), then fold.
        ``reserved``: ids previews announced for the first events (``EventLog.append``).

        If the stored events directly follow the last event folded, they are folded as
        they are; otherwise (user events, or appends not folded, landed in between) the
        log is read from the last event folded on, so no event is ever skipped."""
        appended = await self.log.append_after(
            self.session_id, events, fence=self.claim.lease, key=key, reserved=reserved
        )
        self.appends += 1
        async with self._folding:
            if appended.follows is not None and appended.follows == self.position:
                self._fold(appended.events)
            else:
                self._fold(await self.log.replay(self.session_id, after=self.position))
        return appended.events

    async def idle(
        self,
        reason: str,
        *extra: AnyEvent,
        event_ids: list[str] | None = None,
        details: StopDetails | None = None,
        key: str | None = None,
        reserved: Sequence[str] = (),
    ) -> None:
        """End the turn: ``extra`` events, then `session.status_idle` with ``reason``."""
        stop = StopReason(type=reason, event_ids=event_ids)  # type: ignore[arg-type]
        idle = SessionStatusIdleEvent(stop_reason=stop, stop_details=details)
        await self.emit(*extra, idle, key=key, reserved=reserved)
        metrics.TURNS.labels(reason).inc()
