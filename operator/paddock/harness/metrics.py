"""Prometheus metrics of harness workers (module level: one registry per process)."""

from prometheus_client import Counter, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

TIME_TO_FIRST_TOKEN = Histogram(
    "paddock_harness_time_to_first_token_seconds",
    "From the start of a model request to its first streamed event.",
    buckets=_LATENCY,
)
MODEL_LATENCY = Histogram(
    "paddock_harness_model_request_seconds",
    "Duration of successful model requests.",
    buckets=_LATENCY,
)
TOKENS = Counter("paddock_harness_tokens_total", "Tokens used, by kind.", ["kind"])
TOOL_LATENCY = Histogram(
    "paddock_harness_tool_call_seconds",
    "Duration of tool calls, by tool.",
    ["tool"],
    buckets=_LATENCY,
)
MODEL_RETRIES = Counter(
    "paddock_harness_model_retries_total",
    "Failed model requests that were retried, by error.",
    ["error"],
)
MODEL_ERRORS = Counter(
    "paddock_harness_model_errors_total", "Failed model requests, by error type.", ["error"]
)
RESUMES = Counter(
    "paddock_harness_resumes_total", "Sessions taken over from a worker that stopped heartbeating."
)
TAKEOVER_SECONDS = Histogram(
    "paddock_harness_takeover_seconds",
    "Sessions taken over: from the previous worker's last heartbeat to the takeover.",
    buckets=(0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120),
)
TURNS = Counter("paddock_harness_turns_total", "Turns ended, by stop reason.", ["stop_reason"])
