"""Reconciling a Vault: its id label, its `Ready` condition (whether every Secret key its
credentials reference exists), and its credentials in the proxy config and pod template of
every Agent of the namespace (the controller requeues those Agents). A Vault missing a key is
checked again every `RECHECK_S` (there is no Secret informer: Secrets are the tenant's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paddock.models import API_VERSION, ConditionType, Vault, VaultReason, secret_refs
from paddock.operator import render
from paddock.operator.identity import ensure_id
from paddock.operator.runtime import Runtime
from paddock.operator.status import condition

MANAGER = "paddock-vaults"
RECHECK_S = 30.0


async def missing_keys(rt: Runtime, vault: Vault) -> list[str]:
    """The referenced Secret keys that do not exist, described for a user (names only)."""
    namespace = render.namespace_of(vault)
    missing = []
    secrets: dict[str, dict[str, Any] | None] = {}  # each Secret read once
    for credential in [c for c in vault.spec.credentials if not c.archived_at]:
        for what, ref in secret_refs(credential).items():
            if ref.name not in secrets:
                secrets[ref.name] = await rt.kube.find("v1", "Secret", namespace, ref.name)
            secret = secrets[ref.name]
            if secret is None:
                missing.append(f'"{ref.name}" ({credential.id} {what})')
            elif ref.key not in (secret.get("data") or {}):
                missing.append(f'key "{ref.key}" in "{ref.name}" ({credential.id} {what})')
    return missing


async def reconcile_vault(rt: Runtime, vault: Vault) -> bool:
    """Label and check ``vault``; whether every key it references exists."""
    await ensure_id(rt.kube, vault)
    missing = await missing_keys(rt, vault)
    generation = vault.metadata.generation
    ready = condition(
        ConditionType.READY,
        not missing,
        VaultReason.SECRET_NOT_FOUND if missing else VaultReason.READY,
        ("missing: " + ", ".join(missing)) if missing else "every referenced Secret key exists",
        generation=generation,
        previous=vault.status.conditions if vault.status else None,
        now=datetime.now(UTC),
    )
    await rt.kube.apply_status(
        API_VERSION,
        "Vault",
        render.namespace_of(vault),
        render.name_of(vault),
        {"observedGeneration": generation, "conditions": [ready]},
        MANAGER,
    )
    return not missing
