"""What a session mounts, as its settings in Redis carry it to the harness."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from paddock.eventlog import SessionNotFound, settings_for
from paddock.gateway.common import Gateway
from paddock.gateway.files import find_file
from paddock.gateway.params import FileResourceParam, ResourceParam
from paddock.models import Session


async def check_files(gw: Gateway, tenant: str, resources: Sequence[ResourceParam]) -> None:
    """404 unless every file resource names one of the tenant's files."""
    for resource in resources:
        if isinstance(resource, FileResourceParam):
            await find_file(gw, tenant, resource.file_id)


async def refresh_settings(gw: Gateway, tenant: str, session_id: str, session: Session) -> None:
    """Rewrite what the session's settings take from its resource (budget, resources),
    keeping what only Redis has (the resolved environment, the gateway token)."""
    state = gw.state.tenant(tenant)
    settings = await state.settings(session_id)
    if settings is None:  # not started yet: the operator writes them all when it starts it
        return
    fresh = settings_for(session, settings.environment)
    update = {"budget": fresh.budget, "files": fresh.files, "repositories": fresh.repositories}
    with contextlib.suppress(SessionNotFound):
        await state.put_settings(session_id, settings.model_copy(update=update))
