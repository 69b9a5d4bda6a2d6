"""The admin listener, on loopback for the harness in the same pod: egress tokens, probes and
metrics. Sandboxes run in other pods and cannot reach it."""

from __future__ import annotations

import time
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paddock.models import ObjectName
from paddock.proxy.audit import Audit, Entry
from paddock.proxy.files import SecretUnavailable
from paddock.proxy.runtime import Runtime
from paddock.proxy.tokens import SESSION_ID


class TokenRequest(BaseModel):
    """Body of ``POST /v1/session-tokens``."""

    model_config = ConfigDict(extra="forbid")

    session_id: Annotated[str, Field(pattern=f"^{SESSION_ID.pattern}$")]
    environment: ObjectName


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


class Admin:
    """The admin listener's application."""

    def __init__(self, runtime: Runtime, audit: Audit) -> None:
        self._runtime = runtime
        self._audit = audit

    def app(self) -> web.Application:
        """``POST /v1/session-tokens``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``."""
        app = web.Application()
        app.router.add_post("/v1/session-tokens", self.session_token)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def session_token(self, request: web.Request) -> web.Response:
        """Mint an egress token: ``{"session_id", "environment"}`` → ``{"token", "expires_at"}``.

        400 for a bad body, 422 for an environment this proxy has no policy for, 503 when the
        token key is unavailable. The token itself is never logged.
        """
        entry = Entry("admin", method="POST", rule="mint-token")
        response = await self._mint(request, entry)
        entry.status = response.status
        entry.decision = "allow" if response.status == 200 else "deny"
        self._audit.record(entry)
        return response

    async def _mint(self, request: web.Request, entry: Entry) -> web.Response:
        try:
            body = TokenRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            errors = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return _problem(400, "; ".join(errors))
        entry.session = body.session_id
        try:
            token = self._runtime.mint_token(body.session_id, body.environment)
        except ValueError as exc:
            return _problem(422, str(exc))
        except SecretUnavailable:
            return _problem(503, "the token key is unavailable")
        expires_at = int(time.time()) + self._runtime.config.token_max_age_seconds
        return web.json_response({"token": token, "expires_at": expires_at})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the process serves requests."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 when every configured secret is readable, else 503 listing what is not (paths,
        never contents)."""
        problems = self._runtime.problems()
        return web.json_response(
            {"ready": not problems, "problems": problems}, status=503 if problems else 200
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Request counters by listener and decision, and the vault credentials' refreshes
        and failures, in the Prometheus text format."""
        text = self._audit.metrics() + self._runtime.vaults().metrics()
        return web.Response(text=text, content_type="text/plain")
