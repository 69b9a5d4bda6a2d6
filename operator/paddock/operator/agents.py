"""Reconciling an Agent: its harness Deployment with the proxy sidecar, their config, the
proxy Service, the NetworkPolicies of its harness pods and of the sandboxes claimed for its
sessions, and the Agent's status."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from paddock.kube import (
    KubeClient,
    delete_revision,
    list_versions,
    record_current,
    revisions_to_prune,
    versions_in_use,
)
from paddock.models import API_VERSION, Agent, AgentReason, ConditionType, Environment, Vault
from paddock.operator import events, render
from paddock.operator.identity import ensure_id
from paddock.operator.observed import Deployment, Pod
from paddock.operator.redisusers import TenantUsers
from paddock.operator.runtime import Runtime
from paddock.operator.status import AgentStatusBody, agent_status

MANAGER = "paddock"


async def missing_secrets(kube: KubeClient, agent: Agent) -> list[str]:
    """The referenced Secret keys that do not exist, described for a user."""
    namespace = render.namespace_of(agent)
    credentials = agent.spec.credentials
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


async def namespace_vaults(rt: Runtime, namespace: str) -> list[Vault]:
    """The namespace's Vaults: every Agent's proxy may use any of them (a session names the
    ones it uses)."""
    return [Vault.model_validate(v) for v in await rt.kube.list(API_VERSION, "Vault", namespace)]


async def apply_proxy_config(rt: Runtime, agent: Agent, vaults: list[Vault] | None = None) -> None:
    """The proxy config lists every Environment and vault credential of the namespace; it is
    reloaded live."""
    namespace = render.namespace_of(agent)
    found = await rt.kube.list(API_VERSION, "Environment", namespace)
    environments = [Environment.model_validate(e) for e in found]
    if vaults is None:
        vaults = await namespace_vaults(rt, namespace)
    await rt.kube.apply(
        render.proxy_config_map(agent, environments, rt.settings.render, vaults), manager=MANAGER
    )


async def reconcile(rt: Runtime, agent: Agent, *, active_sessions: int) -> AgentStatusBody:
    """Apply everything the Agent renders to; return its status. Objects are applied even
    while a reference is missing: pods wait for a Secret that GitOps applies later."""
    kube, namespace = rt.kube, render.namespace_of(agent)
    names = render.harness_names(agent)
    if await kube.find("v1", "Secret", namespace, names["token_key"]) is None:
        await kube.create(render.token_key_secret(agent, secrets.token_hex(32)))
    await kube.apply(render.agent_config_map(agent), manager=MANAGER)
    vaults = await namespace_vaults(rt, namespace)
    await apply_proxy_config(rt, agent, vaults)
    deployment = await kube.apply(
        render.harness_deployment(agent, rt.settings.render, vaults), manager=MANAGER
    )
    await kube.apply(render.proxy_service(agent), manager=MANAGER)
    await kube.apply(render.harness_network_policy(agent, rt.settings.render), manager=MANAGER)
    await kube.apply(render.sandbox_access_policy(agent), manager=MANAGER)
    return await status(
        rt, agent, deployment=Deployment(deployment), active_sessions=active_sessions
    )


async def record_versions(rt: Runtime, agent: Agent) -> None:
    """Record the Agent's current version (docs/api-design.md, "Decision: agent versions"),
    and prune the versions beyond `revisionHistoryLimit` that no live Session runs."""
    meta = agent.metadata
    obj = {
        "apiVersion": agent.api_version,
        "kind": agent.kind,
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "generation": meta.generation,
            "annotations": meta.annotations or {},
        },
        "spec": agent.spec.to_k8s(),
    }
    await record_current(rt.kube, obj)
    sessions = (
        s
        for s in rt.informers["Session"].values()
        if s["metadata"].get("namespace") == meta.namespace
    )
    in_use = versions_in_use(sessions, meta.name or "")
    kept = [v.version for v in await list_versions(rt.kube, obj)]
    for version in revisions_to_prune(kept, limit=agent.spec.revision_history_limit, in_use=in_use):
        await delete_revision(rt.kube, obj, version)


def roster_problems(agent: Agent, find: Callable[[str], dict[str, Any] | None]) -> list[str]:
    """What is wrong with a coordinator's roster: Agents it names that do not exist (yet:
    GitOps may apply them later) or are coordinators themselves."""
    if agent.spec.multiagent is None:
        return []
    problems = []
    for ref in agent.spec.multiagent.agents:
        found = find(ref.name)
        if found is None:
            problems.append(f'Agent "{ref.name}" not found')
        elif found.get("spec", {}).get("multiagent"):
            problems.append(
                f'Agent "{ref.name}" is a coordinator itself (threads are one level deep)'
            )
    return problems


async def status(
    rt: Runtime,
    agent: Agent,
    *,
    deployment: Deployment | None = None,
    active_sessions: int,
) -> AgentStatusBody:
    """The Agent's status; ``deployment``: its harness Deployment if the caller has it."""
    namespace = render.namespace_of(agent)
    if deployment is None:
        found = await rt.kube.find(
            "apps/v1", "Deployment", namespace, render.harness_names(agent)["deployment"]
        )
        deployment = Deployment(found) if found is not None else None
    environment = agent.spec.environment_ref.name if agent.spec.environment_ref else None
    missing_environment = None
    if (
        environment
        and await rt.kube.find(API_VERSION, "Environment", namespace, environment) is None
    ):
        missing_environment = environment
    # Why no worker is ready is in the pods: read them only then.
    harness_pods = (
        []
        if deployment is None or deployment.ready_replicas
        else [
            Pod(p)
            for p in await rt.kube.list("v1", "Pod", namespace, labels=render.harness_labels(agent))
        ]
    )
    return agent_status(
        agent,
        missing_secrets=await missing_secrets(rt.kube, agent),
        missing_environment=missing_environment,
        roster_problems=roster_problems(
            agent, lambda name: rt.informers["Agent"].get(namespace, name)
        ),
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
        self._applied: dict[str, tuple[int, int]] = {}  # uid -> (generation, vault epoch)
        self._vault_epochs: dict[str, int] = {}  # namespace -> changes of its Vaults seen
        self.redis_users = TenantUsers(rt)

    def vaults_changed(self, namespace: str) -> None:
        """Apply the objects of the namespace's Agents at their next reconcile even if their
        generation is the one applied: they render the namespace's Vaults. (An epoch, not a
        forget: a reconcile already running read the Vaults before this change.)"""
        self._vault_epochs[namespace] = self._vault_epochs.get(namespace, 0) + 1

    def forget_applied(self) -> None:
        self._applied.clear()
        self.redis_users.forget()

    async def reconcile(self, agent: Agent) -> None:
        meta = agent.metadata
        uid, generation = meta.uid or "", meta.generation or 0
        active = self.active_sessions(f"{meta.namespace}/{meta.name}")
        # Every time, not once per generation: a restarted Redis has forgotten the user.
        await self.redis_users.ensure(agent)
        applied = (generation, self._vault_epochs.get(meta.namespace or "", 0))
        if self._applied.get(uid) != applied:
            await ensure_id(self.rt.kube, agent)
            new = await reconcile(self.rt, agent, active_sessions=active)
            await record_versions(self.rt, agent)
            self._applied[uid] = applied
        else:
            new = await status(self.rt, agent, active_sessions=active)
        await self._report(agent, new)

    async def _report(self, agent: Agent, new: AgentStatusBody) -> None:
        current = agent.status.to_k8s() if agent.status else None
        conditions = agent.status.conditions if agent.status else []
        old = next((c for c in conditions if c.type == ConditionType.READY), None)
        ready = new["conditions"][0]
        if old is None or (old.status, old.reason) != (ready["status"], ready["reason"]):
            warning = ready["status"] != "True"
            await events.post(
                self.rt.kube, agent, AgentReason(ready["reason"]), ready["message"], warning=warning
            )
        # The validated status dumps back to what the API stores: equal when nothing changed.
        if new != current:
            applied = await self.rt.kube.apply_status(
                agent.api_version,
                "Agent",
                render.namespace_of(agent),
                render.name_of(agent),
                new,
                MANAGER,
            )
            if applied:
                self.rt.informers["Agent"].store(applied)
