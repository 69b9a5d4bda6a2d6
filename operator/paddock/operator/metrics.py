"""Prometheus metrics of the operator."""

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("paddock_operator_reconciles_total", "Reconciles, by kind.", ["kind"])
RECONCILE_ERRORS = Counter(
    "paddock_operator_reconcile_errors_total", "Failed reconciles, by kind.", ["kind"]
)
RECONCILE_SECONDS = Histogram(
    "paddock_operator_reconcile_seconds",
    "Duration of reconciles, by kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WARM_POOL = Gauge(
    "paddock_operator_warm_pool_sandboxes",
    "Sandboxes of an Environment, by state.",
    ["namespace", "environment", "state"],
)
CLAIM_SECONDS = Histogram(
    "paddock_operator_sandbox_claim_seconds",
    "From a session needing a sandbox to its binding being recorded, by path (warm or cold).",
    ["path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SANDBOX_REPLACE_SECONDS = Histogram(
    "paddock_operator_sandbox_replace_seconds",
    "From a session's bound sandbox being known lost (a harness worker's report, or its pod "
    "seen dead or gone) to a fresh sandbox's binding being recorded.",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
)
SESSIONS = Gauge(
    "paddock_operator_sessions", "Sessions known to the status sync, by phase.", ["phase"]
)
PACKAGE_INSTALL_SECONDS = Histogram(
    "paddock_sandbox_package_install_seconds",
    "Installing an Environment's packages in a warm sandbox: from the sandbox container's "
    "start to the pod's readiness (outcome installed) or to the installer's failure (failed).",
    ["namespace", "environment", "outcome"],
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
