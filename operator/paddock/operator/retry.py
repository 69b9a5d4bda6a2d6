"""The operator's one retry policy: exponential backoff, per thing that fails.

A reconcile that fails (the apiserver or Redis refused or was away, a reference does not
resolve yet) and a sandbox pod that fails to start are tried again after the same delays:
1 s, doubling, at most 5 min, reset by a success (client-go's per-item rate limiter and
the kubelet's CrashLoopBackOff have the same shape). A 429's Retry-After is honoured
inside the Kubernetes client, before the failure reaches this policy.
"""

from __future__ import annotations

FIRST_S = 1.0
CAP_S = 300.0


def retry_delay_s(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
    return min(FIRST_S * 2.0 ** max(failures - 1, 0), CAP_S)
