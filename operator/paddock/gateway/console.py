"""The web console (docs/console.md): static files under `/console/`, and the read-only
status the API's views leave out (Ready conditions, warm pools, a session's phase and stop
reason as the operator synced them) under `/v1/console/…`.

The files carry no data and need no credentials; the page asks for the API key and calls
the JSON API with it, like any other client. Every console answer has a strict
Content-Security-Policy: only the console's own script and style, so even text a model
wrote that slipped into the page as markup could run nothing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from paddock.gateway.common import objects
from paddock.gateway.convert.meta import display_name, labels
from paddock.gateway.objects import AGENTS, ENVIRONMENTS, SESSIONS, Kind
from paddock.gateway.views import (
    ConsoleAgent,
    ConsoleAgentList,
    ConsoleEnvironment,
    ConsoleEnvironmentList,
    ConsoleSession,
    ConsoleSessionList,
    ResourceCondition,
    WarmPoolState,
    respond,
)

PREFIX = "/console/"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, changed with the gateway's version: always revalidated, never stale.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


def _files() -> dict[str, tuple[bytes, str]]:
    """The console's files by name, read once from the package (they ship as package data)."""
    folder = resources.files("paddock.gateway") / "static"
    found = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            found[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return found


FILES = _files()

routes = web.RouteTableDef()


@routes.get("/console")
async def console_root(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": PREFIX, **SECURITY_HEADERS})


@routes.get("/console/{file:[^/]*}")
async def console_file(request: web.Request) -> web.Response:
    # A fixed set of names: nothing from the path reaches the file system.
    name = request.match_info["file"] or "index.html"
    found = FILES.get(name)
    if found is None:
        return web.Response(status=404, text="not found", headers=SECURITY_HEADERS)
    body, content_type = found
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS
    )


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _conditions(obj: dict[str, Any]) -> list[ResourceCondition]:
    return [
        ResourceCondition(
            type=str(c.get("type", "")),
            status=str(c.get("status", "")),
            reason=c.get("reason"),
            message=c.get("message"),
        )
        for c in _status(obj).get("conditions") or []
    ]


def _id(obj: dict[str, Any], kind: Kind) -> str:
    return labels(obj)[kind.label]


@routes.get("/v1/console/agents")
async def console_agents(request: web.Request) -> web.Response:
    items = await objects(request).list(AGENTS)
    return respond(
        ConsoleAgentList(
            data=[
                ConsoleAgent(
                    id=_id(obj, AGENTS),
                    name=display_name(obj),
                    conditions=_conditions(obj),
                    replicas=_status(obj).get("replicas"),
                    ready_replicas=_status(obj).get("readyReplicas"),
                    active_sessions=_status(obj).get("activeSessions"),
                )
                for obj in items
            ]
        )
    )


@routes.get("/v1/console/environments")
async def console_environments(request: web.Request) -> web.Response:
    items = await objects(request).list(ENVIRONMENTS)
    data = []
    for obj in items:
        pool = _status(obj).get("warmPool") or {}
        size = ((obj.get("spec") or {}).get("warmPool") or {}).get("size")
        data.append(
            ConsoleEnvironment(
                id=_id(obj, ENVIRONMENTS),
                name=display_name(obj),
                conditions=_conditions(obj),
                warm_pool=WarmPoolState(
                    size=size,
                    desired=pool.get("desired"),
                    ready=pool.get("ready"),
                    bound=pool.get("bound"),
                ),
            )
        )
    return respond(ConsoleEnvironmentList(data=data))


@routes.get("/v1/console/sessions")
async def console_sessions(request: web.Request) -> web.Response:
    items = await objects(request).list(SESSIONS)
    return respond(
        ConsoleSessionList(
            data=[
                ConsoleSession(
                    id=_id(obj, SESSIONS),
                    name=obj["metadata"]["name"],
                    phase=_status(obj).get("phase"),
                    stop_reason=_status(obj).get("stopReason"),
                )
                for obj in items
            ]
        )
    )
