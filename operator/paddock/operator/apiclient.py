"""The operator's Kubernetes client: `KubeClient`, with its requests sent through aiohttp.

At scale the operator makes thousands of requests a minute. Through httpx each cost 0.5 to
1 ms of CPU on the development machine (most of it in the connection pool's bookkeeping,
which grows with the number of connections), through aiohttp about 0.1 ms: measured with
3,000 GETs against the local apiserver. Watches (`Informer`) stay on the httpx client
(`http`), where the cost is per event line rather than per request; it gets one
connection per watch.

Failures to get any answer (connection refused, reset, timeout) raise `ApiError` with
status 0, so that every caller's `except ApiError` covers them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx

from paddock.kube import ApiError, Credentials, KubeClient, raise_for_status

CONNECTIONS = 16
"""Requests in flight; more only add waiting on a 2-core apiserver."""


class AioKubeClient(KubeClient):
    """`KubeClient` whose requests (`_call`) go through one aiohttp session."""

    def __init__(self, credentials: Credentials, *, watches: int) -> None:
        limits = httpx.Limits(max_connections=watches, max_keepalive_connections=watches)
        super().__init__(
            httpx.AsyncClient(
                base_url=credentials.host,
                verify=credentials.ssl_context,
                auth=credentials.httpx_auth(),
                timeout=30,
                limits=limits,
            )
        )
        self.credentials = credentials
        self._session: aiohttp.ClientSession | None = None

    def _aiohttp(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the event loop that uses it
            self._session = aiohttp.ClientSession(
                base_url=self.credentials.host,
                connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=self.credentials.ssl_context),
                # Waiting for a free connection is not a timeout (callers bound their own
                # concurrency); a connect or an answer that takes long is.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await super().aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        session = self._aiohttp()
        params = kwargs.get("params")
        for _ in range(5):
            # Asked for every time: a rotated ServiceAccount token applies at once.
            headers = {**await self.credentials.headers(), **(kwargs.get("headers") or {})}
            try:
                async with session.request(
                    method,
                    url,
                    params={k: str(v) for k, v in params.items()} if params else None,
                    data=kwargs.get("content"),
                    json=kwargs.get("json"),
                    headers=headers,
                ) as response:
                    status, text = response.status, await response.text()
                    retry_after = response.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, f"{method} {url}: {exc!r}") from exc
            # The apiserver sheds load (and answers while its storage starts) with 429:
            # wait as it says, a few times, before giving the error to the caller's retry.
            if status != 429:
                break
            await asyncio.sleep(min(float(retry_after or 1), 5))
        raise_for_status(status, text)
        return json.loads(text) if text else {}
