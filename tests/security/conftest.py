"""A hostile sandbox's view of the credential proxy: the real proxy process, real upstreams on
loopback, raw sockets. The proxy runs with a hosts file of its own (a private mount namespace)
so that names can resolve to special-purpose addresses without any DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web
from tests.security.registries import ENTRIES, REPORTED_BYPASSES

from paddock.testing.gitserver import ThreadedApp
from paddock.testing.proxy import ProxyProcess, Secrets, private_hosts


class EchoHost(ThreadedApp):
    """A host that echoes every request back: method, path and every header, as JSON. The
    worst case for a credential: whatever the proxy adds, the sandbox would read."""

    def __init__(self) -> None:
        self.seen: list[dict[str, object]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._echo)
        super().__init__(app)

    async def _echo(self, request: web.Request) -> web.Response:
        seen = {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
        }
        self.seen.append(seen)
        return web.json_response(seen)


def hosts_name(index: int) -> str:
    return f"e{index}.special.test"


HOSTS_NAMES = {hosts_name(i): entry.probe for i, entry in enumerate(ENTRIES)} | {
    f"bypass{i}.special.test": ip for i, ip in enumerate(REPORTED_BYPASSES)
}


@pytest.fixture(scope="module")
def secrets_(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return Secrets(tmp_path_factory.mktemp("secrets"))


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoHost]:
    with EchoHost() as host:
        yield host


@pytest.fixture(scope="module")
def hosts_wrapper(tmp_path_factory: pytest.TempPathFactory) -> list[str] | None:
    return private_hosts(tmp_path_factory.mktemp("hosts") / "hosts", HOSTS_NAMES)


@pytest.fixture
def names_resolve(hosts_wrapper: list[str] | None) -> None:
    """Skips a test that needs the proxy's private hosts file (root and unshare)."""
    if hosts_wrapper is None:
        pytest.skip("names for special-purpose addresses need root and unshare")


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    secrets_: Secrets,
    echo: EchoHost,
    hosts_wrapper: list[str] | None,
) -> Iterator[ProxyProcess]:
    """Credentials for ``localhost`` (basic; an API route ``GET /api/``), the echo host
    reachable on the git path in clear text, and Environments of every mode."""
    work = tmp_path_factory.mktemp("proxy")
    process = ProxyProcess(
        work,
        secrets_,
        environments={
            "locked": {"mode": "none"},
            "limited": {"mode": "limited", "allowed_domains": ["localhost", "*.special.test"]},
            "open": {"mode": "open"},
        },
        credentials=[
            {
                "host": "localhost",
                "secret_file": str(secrets_.path("git_token")),
                "scheme": "basic",
                "api_routes": [{"methods": ["GET"], "path_prefix": "/api/"}],
            }
        ],
        address_exceptions=[f"127.0.0.1:{echo.port}"],
        upstream_scheme_overrides={f"localhost:{echo.port}": "http"},
    )
    process.wrapper = hosts_wrapper or []
    process.start()
    yield process
    process.stop()
