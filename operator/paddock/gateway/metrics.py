"""Prometheus metrics of the gateway (module level: one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "paddock_gateway_requests_total",
    "API requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "paddock_gateway_request_seconds",
    "Time to the response headers, by route template and method (event streams: time to open).",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OPEN_STREAMS = Gauge("paddock_gateway_open_streams", "Event streams open now.")
STREAMED_EVENTS = Counter(
    "paddock_gateway_streamed_events_total", "Events written to event streams."
)
