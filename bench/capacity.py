"""Harness capacity: the largest rate of new sessions a second that the harness workers
(two by default) sustain with time to first token p95 <= 50 ms.

Each session is one full turn with a warm sandbox (bound at once): a model request that
asks for a tool, the tool call in a real sandbox server, a second request that ends the turn.
Sessions start open-loop at a fixed rate for `--seconds`; the rate rises by `--step` from
`--start` until a round misses the target (or `--max-rate`), then the search halves the
step between the last rate that met it and the first that missed, `--refine` times. TTFT is
as in `bench/ttft.py` (`user.message` appended -> first model request), on the same setup.
Ends with one key=value line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from stats import percentile
from ttft import bench

TARGET_P95_MS = 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="harness worker processes")
    parser.add_argument("--seconds", type=float, default=6, help="length of each round")
    parser.add_argument("--start", type=float, default=10, help="first rate, sessions a second")
    parser.add_argument("--step", type=float, default=10, help="rate increase between rounds")
    parser.add_argument("--max-rate", type=float, default=200, help="highest rate tried")
    parser.add_argument("--refine", type=int, default=2, help="bisection rounds at the end")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = parser.parse_args()

    results: dict[float, tuple[float, float]] = {}
    with bench(args.workers, args.redis_url) as b:
        asyncio.run(b.ready())

        def meets(rate: float) -> bool:
            sessions = max(20, round(rate * args.seconds))
            ttft = asyncio.run(
                b.round(rate=rate, sessions=sessions, cold_start_s=0, label=f"r{rate:g}")
            )["decoupled"]
            p50, p95 = statistics.median(ttft), percentile(ttft, 95)
            results[rate] = (p50, p95)
            print(f"{rate:6.1f} sessions/s: p50 {p50:6.1f} ms, p95 {p95:7.1f} ms", flush=True)
            return p95 <= TARGET_P95_MS

        good, bad, rate = 0.0, None, args.start
        while rate <= args.max_rate:
            if not meets(rate):
                bad = rate
                break
            good, rate = rate, rate + args.step
        for _ in range(args.refine if bad is not None else 0):
            assert bad is not None
            middle = (good + bad) / 2
            if meets(middle):
                good = middle
            else:
                bad = middle

    p50, p95 = results.get(good, (float("nan"), float("nan")))
    print(
        f"sessions_per_s_at_p95_50ms={good:.1f} p50_ms_at_rate={p50:.2f} "
        f"p95_ms_at_rate={p95:.2f} first_miss_rate={bad or 0:.1f} workers={args.workers}"
    )


if __name__ == "__main__":
    main()
