"""The Lua scripts (``*.lua`` next to this file), registered on a client.

Scripts run by EVALSHA; redis-py loads a script again when the server answers NOSCRIPT (after
a restart), so nothing has to be set up on the server. Each script touches the keys of one
session or of one Agent's work queue, never both, so it runs on Redis Cluster unchanged.

The scripts that read a session's lease start with ``prelude.lua`` (the lease format, the
fence check, stream id order), prepended here: the helpers are written once, and each script
stays one self-contained EVALSHA, so a fresh or restarted Redis needs nothing loaded first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_DIR = Path(__file__).parent

WITH_PRELUDE = frozenset({"acquire_lease", "append", "release_lease", "renew_lease"})
"""The scripts that read the session's lease, and so start with the prelude."""


@cache
def source(name: str) -> str:
    """The Lua source of script ``name``, with the prelude if it is one of ``WITH_PRELUDE``."""
    body = (_DIR / f"{name}.lua").read_text()
    if name in WITH_PRELUDE:
        return (_DIR / "prelude.lua").read_text() + body
    return body


@dataclass(frozen=True, slots=True)
class Scripts:
    # Session scripts (KEYS of one session).
    create_session: AsyncScript
    append: AsyncScript
    read: AsyncScript
    acquire_lease: AsyncScript
    renew_lease: AsyncScript
    release_lease: AsyncScript
    # Work-queue scripts (KEYS of one Agent's queue).
    enqueue: AsyncScript
    settle: AsyncScript
    unmark: AsyncScript
    forget: AsyncScript
    reclaim: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(**{f.name: redis.register_script(source(f.name)) for f in fields(cls)})
