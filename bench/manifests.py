"""Manifests the local-stack benches apply: an Agent on a warm-pooled Environment, and a
second Environment without a pool for cold starts."""

from __future__ import annotations

from typing import Any

PADDOCK = "paddock.dev/v1alpha1"


def warm_and_cold(agent: str, warm: str, cold: str, pool: int) -> list[dict[str, Any]]:
    """Environment ``warm`` with ``pool`` warm sandboxes, ``cold`` with none (no network
    for either), and ``agent`` on ``warm``."""

    def environment(name: str, size: int) -> dict[str, Any]:
        return {
            "apiVersion": PADDOCK,
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {
                "image": "paddock/sandbox:0.1.0",
                "networking": {"mode": "none"},
                "warmPool": {"size": size},
            },
        }

    return [
        environment(warm, pool),
        environment(cold, 0),
        {
            "apiVersion": PADDOCK,
            "kind": "Agent",
            "metadata": {"name": agent},
            "spec": {
                "model": "claude-sonnet-4-6",
                "environmentRef": {"name": warm},
                "credentials": {"anthropicApiKey": {"name": "anthropic", "key": "api-key"}},
            },
        },
    ]
