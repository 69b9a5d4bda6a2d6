"""The one fixture of each real service, shared by every test folder: Redis (and a client of
it), a Kubernetes control plane, a sandbox server, the gateway stack, and the one-node
cluster (tests/node, and tests/e2e's local-node provider: one node per machine); a git host
(`git http-backend`) and the proxy's secret files for a module; a headless Chromium
(tests/console).

Redis, the control plane and the node are started once per test run and torn down at the
end, also when tests fail; a sandbox server lives for a module (tests leave files in its
workdir), a gateway stack for a test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from paddock.testing.controlplane import ControlPlane
from paddock.testing.gitserver import GitServer
from paddock.testing.node import LocalNode, container_support
from paddock.testing.proxy import Secrets
from paddock.testing.redis import RedisServer
from paddock.testing.sandbox import RunningSandbox, launch

if TYPE_CHECKING:
    from playwright.sync_api import Browser
    from tests.gateway.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (hack/setup.sh): Playwright drives it; its own browsers are never
downloaded (the test machines have no internet)."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server (AOF on, fsync on every write) for the whole run, with Paddock's
    Redis users as the chart sets them up: its `url` is the operator's (every command),
    `gateway_url` and `tenant_url(namespace)` the restricted users, the default user behind a
    password no one has; `rediss_url` a TLS listener whose CA is `ca_file`."""
    with RedisServer(tls=True) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the shared redis-server (as the operator), emptied before the test."""
    if redis_server.process is None:  # a test stopped it; bring it back
        redis_server.start()
    client = SyncRedis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the shared (emptied) redis-server, in the test's event loop."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with Paddock's CRDs installed."""
    with ControlPlane() as plane:
        plane.apply_crds()
        yield plane


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """A real sandbox server process, shared by the tests of a module."""
    running = launch(tmp_path_factory.mktemp("sandbox"))
    yield running
    running.stop()


@pytest.fixture
async def stack(
    control_plane: ControlPlane, redis_server: RedisServer, redis_url: str, sandbox: RunningSandbox
) -> AsyncIterator[Stack]:
    """A gateway with two tenants, `stack.a` and `stack.b` (see tests/gateway/stack.py): the
    gateway runs as its Redis user, workers as their tenant's."""
    from tests.gateway.stack import Stack  # the gateway's imports, only where it is used

    running = await Stack(control_plane, redis_server, sandbox).start()
    yield running
    await running.close()


@pytest.fixture(scope="module")
def module_secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    """The credential proxy's secret files (API key, git token, token key) for a module."""
    return Secrets(tmp_path_factory.mktemp("proxy-secrets"))


@pytest.fixture(scope="module")
def git_server(
    tmp_path_factory: pytest.TempPathFactory, module_secrets: Secrets
) -> Iterator[GitServer]:
    """A real git smart-HTTP host with a bare repository `repo`, which demands the git token
    of `module_secrets` as the proxy sends it (Basic, `x-access-token`)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    basic = module_secrets.values()["git_token_basic"]
    with GitServer(tmp_path_factory.mktemp("git-host"), f"Basic {basic}") as server:
        server.create_repo("repo")
        yield server


@pytest.fixture(scope="session")
def local_node() -> Iterator[LocalNode]:
    """kubelet + containerd + kube-proxy + kube-router + CoreDNS on this machine, Ready.
    Skips only where the kernel refuses containers, found by running one with runc; any
    other failure to bring the node up is an error, not a skip."""
    reason = container_support()
    if reason is not None:
        print(f"local node skipped: {reason}")
        pytest.skip(f"this kernel refuses containers: {reason}")
    with LocalNode() as node:
        yield node


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright, for one test module; each test opens its own
    context (cookies, storage), so tests share nothing but the process. Not for the whole
    run: between calls Playwright's sync API marks its event loop as running on the main
    thread, and every pytest-asyncio test after it would fail to start its own loop."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: hack/setup.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright  # only where a browser is used

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()
