"""Benchmark of paddock.eventlog against the Redis it runs on.

Measures, on one redis-server in one run:
- append throughput through ``EventLog.append`` (fenced, one event per call, as a harness
  worker appends) against raw XADD of the same payloads, as a ratio;
- the time to replay a 10,000-event session (``EventLog.replay``), against the time pydantic
  alone takes to validate the JSON of the same events in memory (the floor of any replay
  that returns validated events);
- append-to-subscriber latency: from the start of ``append`` to the event coming out of a
  ``tail`` opened before, p50 and p95.

Starts its own redis-server (AOF on, ``appendfsync always`` as in production) unless given
``--redis-url``. Ends with one line of key=value figures. Targets: append_ratio >= 0.7,
replay_10k_ms <= 50, tail_p95_ms <= 10.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack

from pydantic import TypeAdapter
from redis.asyncio import Redis

from paddock.eventlog import (
    AgentMessageEvent,
    AgentToolResultEvent,
    AgentToolUseEvent,
    AnyEvent,
    EventLog,
    Lease,
    ModelUsage,
    SpanModelRequestEndEvent,
    SpanModelRequestStartEvent,
    TextBlock,
    new_session_id,
    payload,
)
from paddock.testing.redis import RedisServer
from stats import percentile

AGENT = "bench/agent"
EVENTS: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[AnyEvent])
TEXT = (
    "The workspace contains README.md, src/ and tests/; the failing test is in tests/test_io.py. "
)


def typical_turn(i: int) -> list[AnyEvent]:
    """Five events shaped like one tool round of a real session (~1 KiB in all)."""
    return [
        SpanModelRequestStartEvent(),
        AgentMessageEvent(content=[TextBlock(text=f"{i}: {TEXT * 2}")]),
        AgentToolUseEvent(name="bash", input={"command": f"pytest -x tests/test_{i}.py"}),
        AgentToolResultEvent(tool_use_id=f"sevt_{i}", content=[TextBlock(text=TEXT * 3)]),
        SpanModelRequestEndEvent(
            model_request_start_id=f"sevt_{i}",
            model_usage=ModelUsage(
                input_tokens=3571,
                output_tokens=72,
                cache_creation_input_tokens=0,
                cache_read_input_tokens=6656,
            ),
        ),
    ]


async def new_session(log: EventLog) -> tuple[str, Lease]:
    session = new_session_id()
    await log.create_session(session, agent=AGENT)
    lease = await log.acquire_lease(session, "bench", ttl_ms=600_000)
    assert lease is not None
    return session, lease


async def rate(count: int, writers: list[Callable[[int], Awaitable[object]]]) -> float:
    """Events per second when each writer makes ``count / len(writers)`` calls in sequence."""
    each = count // len(writers)

    async def run(write: Callable[[int], Awaitable[object]]) -> None:
        for i in range(each):
            await write(i)

    start = time.perf_counter()
    await asyncio.gather(*(run(write) for write in writers))
    return each * len(writers) / (time.perf_counter() - start)


async def append_throughput(log: EventLog, appends: int, concurrency: int) -> tuple[float, float]:
    """(API appends/s, raw XADD/s): best of three alternating rounds each."""
    sessions = [await new_session(log) for _ in range(concurrency)]
    events = [AgentMessageEvent(content=[TextBlock(text=f"{i}: {TEXT}")]) for i in range(appends)]

    def api_writer(session: str, lease: Lease) -> Callable[[int], Awaitable[object]]:
        return lambda i: log.append(session, [events[i]], fence=lease)

    def raw_writer(n: int) -> Callable[[int], Awaitable[object]]:
        # The same bytes an append stores, written by hand.
        return lambda i: log.redis.xadd(
            f"bench:raw:{n}", {"t": events[i].type, "e": payload(events[i])}
        )

    api = [api_writer(session, lease) for session, lease in sessions]
    raw = [raw_writer(n) for n in range(concurrency)]
    await rate(appends // 10, api)  # warm up: connections, scripts, caches
    await rate(appends // 10, raw)
    api_rates, raw_rates = [], []
    for _ in range(3):
        raw_rates.append(await rate(appends, raw))
        api_rates.append(await rate(appends, api))
    await log.redis.delete(*(f"bench:raw:{n}" for n in range(concurrency)))
    return max(api_rates), max(raw_rates)


async def replay_time(log: EventLog, events: int, runs: int) -> tuple[float, float]:
    """Median milliseconds to replay a session of ``events`` events, and to validate their
    JSON held in memory."""
    session, lease = await new_session(log)
    # One append per turn, as a worker writes: events carry spread-out times, which matters
    # because the ids of events stored in the same millisecond share the encoding of it.
    for first in range(0, events, 5):
        await log.append(session, typical_turn(first // 5)[: events - first], fence=lease)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        replayed = await log.replay(session)
        times.append((time.perf_counter() - start) * 1000)
        assert len(replayed) == events
        del replayed  # freeing 10,000 events is no part of the next replay
    document = EVENTS.dump_json(await log.replay(session))
    floor = []
    gc.disable()  # as the log decodes: the cyclic GC only costs time here
    try:
        for _ in range(runs):
            start = time.perf_counter()
            validated = EVENTS.validate_json(document)
            floor.append((time.perf_counter() - start) * 1000)
            del validated
    finally:
        gc.enable()
    return statistics.median(times), statistics.median(floor)


async def tail_latency(log: EventLog, samples: int) -> list[float]:
    """Milliseconds from calling append to a subscriber, blocked in a tail opened before,
    receiving the event; one event in flight at a time."""
    session, lease = await new_session(log)
    arrivals: asyncio.Queue[tuple[AnyEvent, float]] = asyncio.Queue()

    async def subscribe() -> None:
        for _ in range(samples):
            event = await anext(tail)
            arrivals.put_nowait((event, time.perf_counter()))

    latencies: list[float] = []
    async with log.tail(session) as tail:
        subscriber = asyncio.create_task(subscribe())
        for i in range(samples):
            await asyncio.sleep(0)  # let the subscriber go back to its blocking read
            sent = time.perf_counter()
            await log.append(
                session, [AgentMessageEvent(content=[TextBlock(text=str(i))])], fence=lease
            )
            event, received = await arrivals.get()
            assert isinstance(event, AgentMessageEvent)
            block = event.content[0]
            assert isinstance(block, TextBlock)
            assert block.text == str(i)
            latencies.append((received - sent) * 1000)
        await subscriber
    return latencies


async def main(args: argparse.Namespace, url: str) -> str:
    redis = Redis.from_url(url)
    log = EventLog(redis, "bench")
    try:
        api, raw = await append_throughput(log, args.appends, args.concurrency)
        print(
            f"append: {api:,.0f} events/s through the API, {raw:,.0f}/s raw XADD "
            f"({args.concurrency} writers, one event per call)"
        )
        replay_ms, validate_ms = await replay_time(log, args.replay_events, args.replay_runs)
        print(
            f"replay: {args.replay_events:,} events in {replay_ms:.1f} ms, validating their JSON "
            f"alone {validate_ms:.1f} ms (medians of {args.replay_runs})"
        )
        latencies = await tail_latency(log, args.tail_samples)
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        print(
            f"tail: append-to-subscriber p50 {p50:.2f} ms, p95 {p95:.2f} ms ({len(latencies)} events)"
        )
    finally:
        await redis.aclose()
    return (
        f"append_ratio={api / raw:.2f} append_per_s={api:.0f} raw_xadd_per_s={raw:.0f} "
        f"replay_10k_ms={replay_ms:.1f} validate_10k_ms={validate_ms:.1f} "
        f"replay_ratio={replay_ms / validate_ms:.2f} tail_p50_ms={p50:.2f} tail_p95_ms={p95:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--appendfsync", default="always", help="for the Redis started here")
    parser.add_argument("--appends", type=int, default=4000, help="events per throughput round")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent writers")
    parser.add_argument("--replay-events", type=int, default=10_000)
    parser.add_argument("--replay-runs", type=int, default=7)
    parser.add_argument("--tail-samples", type=int, default=1000)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.redis_url or stack.enter_context(RedisServer(appendfsync=args.appendfsync)).url
        figures = asyncio.run(main(args, url))
    print(figures)
