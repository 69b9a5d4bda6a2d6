"""Reconciling an Environment: its sandboxes' NetworkPolicies (and the one that lets
sandboxes installing packages reach the package proxy), and its egress rules in the
proxy config of every Agent of the namespace. (Its warm pool is the `pool` key's work.)"""

from __future__ import annotations

from paddock.models import Agent, Environment
from paddock.operator import agents, render
from paddock.operator.identity import ensure_id
from paddock.operator.runtime import Runtime


async def reconcile_environment(rt: Runtime, environment: Environment) -> None:
    await ensure_id(rt.kube, environment)
    await rt.kube.apply(render.sandbox_network_policy(environment), manager=agents.MANAGER)
    if render.installs_packages(environment) and rt.settings.render.package_proxy_url:
        # Left in place if the packages go: it selects only pods labelled to install, and
        # new pods are not (the Environment's deletion removes it).
        policy = render.sandbox_package_policy(environment, rt.settings.render)
        await rt.kube.apply(policy, manager=agents.MANAGER)
    namespace = render.namespace_of(environment)
    for agent in list(rt.informers["Agent"].values()):
        if agent["metadata"]["namespace"] == namespace:
            await agents.apply_proxy_config(rt, Agent.model_validate(agent))
