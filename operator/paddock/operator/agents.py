"""Reconciling an Agent: its harness Deployment with the proxy sidecar, their config, the
proxy Service and NetworkPolicy, and the Agent's status."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from paddock.kube import KubeClient
from paddock.models import Agent
from paddock.operator import events, render
from paddock.operator.identity import ensure_id
from paddock.operator.runtime import Runtime
from paddock.operator.status import agent_status

MANAGER = "paddock"


async def missing_secrets(kube: KubeClient, agent: dict[str, Any]) -> list[str]:
    """The referenced Secret keys that do not exist, described for a user."""
    namespace = agent["metadata"]["namespace"]
    credentials = Agent.model_validate(agent).spec.credentials
    references = [("credentials.anthropicApiKey", credentials.anthropic_api_key)] + [
        (f"credentials.hosts[{c.host}]", c.secret_ref) for c in credentials.hosts
    ]
    missing = []
    for field, ref in references:
        secret = await kube.find("v1", "Secret", namespace, ref.name)
        if secret is None:
            missing.append(f'"{ref.name}" ({field})')
        elif ref.key not in (secret.get("data") or {}):
            missing.append(f'key "{ref.key}" in "{ref.name}" ({field})')
    return missing


async def apply_proxy_config(rt: Runtime, agent: dict[str, Any]) -> None:
    """The proxy config lists every Environment of the namespace; it is reloaded live."""
    namespace = agent["metadata"]["namespace"]
    environments = await rt.kube.list("paddock.dev/v1alpha1", "Environment", namespace)
    await rt.kube.apply(
        render.proxy_config_map(agent, environments, rt.settings.render), manager=MANAGER
    )


async def reconcile(rt: Runtime, agent: dict[str, Any], *, active_sessions: int) -> dict[str, Any]:
    """Apply everything the Agent renders to; return its status. Objects are applied even
    while a reference is missing: pods wait for a Secret that GitOps applies later."""
    kube, namespace = rt.kube, agent["metadata"]["namespace"]
    names = render.harness_names(agent)
    if await kube.find("v1", "Secret", namespace, names["token_key"]) is None:
        await kube.create(render.token_key_secret(agent, secrets.token_hex(32)))
    await kube.apply(render.agent_config_map(agent), manager=MANAGER)
    await apply_proxy_config(rt, agent)
    deployment = await kube.apply(
        render.harness_deployment(agent, rt.settings.render), manager=MANAGER
    )
    await kube.apply(render.proxy_service(agent), manager=MANAGER)
    await kube.apply(render.harness_network_policy(agent, rt.settings.render), manager=MANAGER)
    return await status(rt, agent, deployment=deployment, active_sessions=active_sessions)


async def status(
    rt: Runtime,
    agent: dict[str, Any],
    *,
    deployment: dict[str, Any] | None = None,
    active_sessions: int,
) -> dict[str, Any]:
    namespace = agent["metadata"]["namespace"]
    if deployment is None:
        deployment = await rt.kube.find(
            "apps/v1", "Deployment", namespace, render.harness_names(agent)["deployment"]
        )
    environment = (agent.get("spec") or {}).get("environmentRef", {}).get("name")
    missing_environment = None
    if (
        environment
        and await rt.kube.find("paddock.dev/v1alpha1", "Environment", namespace, environment)
        is None
    ):
        missing_environment = environment
    ready = (deployment or {}).get("status", {}).get("readyReplicas", 0) or 0
    # Why no worker is ready is in the pods: read them only then.
    harness_pods = (
        []
        if deployment is None or ready
        else await rt.kube.list("v1", "Pod", namespace, labels=render.harness_labels(agent))
    )
    return agent_status(
        agent,
        missing_secrets=await missing_secrets(rt.kube, agent),
        missing_environment=missing_environment,
        deployment=deployment,
        harness_pods=harness_pods,
        active_sessions=active_sessions,
        now=datetime.now(UTC),
    )


class AgentReconciler:
    """The Agent's handler on the `Controller`'s work queue: applies what the Agent renders
    to when its spec is new to this replica (once per generation and leadership), and
    writes its status every time (workers come and go, Secrets appear)."""

    def __init__(self, rt: Runtime, active_sessions: Callable[[str], int]) -> None:
        self.rt, self.active_sessions = rt, active_sessions
        self._applied: dict[str, int] = {}  # uid -> generation

    def forget_applied(self) -> None:
        self._applied.clear()

    async def reconcile(self, agent: dict[str, Any]) -> None:
        meta = agent["metadata"]
        uid, generation = meta.get("uid", ""), meta.get("generation", 0)
        active = self.active_sessions(f"{meta['namespace']}/{meta['name']}")
        if self._applied.get(uid) != generation:
            await ensure_id(self.rt.kube, agent)
            new = await reconcile(self.rt, agent, active_sessions=active)
            self._applied[uid] = generation
        else:
            new = await status(self.rt, agent, active_sessions=active)
        await self._report(agent, new)

    async def _report(self, agent: dict[str, Any], new: dict[str, Any]) -> None:
        old = next(
            (c for c in (agent.get("status") or {}).get("conditions", []) if c["type"] == "Ready"),
            None,
        )
        ready = new["conditions"][0]
        if old is None or (old["status"], old["reason"]) != (ready["status"], ready["reason"]):
            warning = ready["status"] != "True"
            await events.post(
                self.rt.kube, agent, ready["reason"], ready["message"], warning=warning
            )
        if new != agent.get("status"):
            applied = await self.rt.kube.apply_status(agent, new, MANAGER)
            if applied:
                self.rt.informers["Agent"].store(applied)
