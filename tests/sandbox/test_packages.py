"""An Environment's packages, installed by the sandbox server before it listens: pip through
a real package proxy (`paddock.proxy` with a registries-only policy) from a real package
index on loopback. A failed install is an exit with the installer's words."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paddock.proxy import tokens
from paddock.sandbox.packages import INSTALL_FAILED_EXIT, PLAN_ENV, PackagePlan
from paddock.testing.aptrepo import AptRepository
from paddock.testing.npmregistry import NpmRegistry
from paddock.testing.proxy import ProxyProcess, Secrets
from paddock.testing.pyindex import PackageIndex
from paddock.testing.sandbox import launch

POD = "python-0a1b2c3d"
MODULE = "paddock_demo_pkg"


@pytest.fixture
def index() -> Iterator[PackageIndex]:
    with PackageIndex() as running:
        running.add("paddock-demo-pkg", "1.0", 'MESSAGE = "installed from the local index"\n')
        yield running


@pytest.fixture
def registry() -> Iterator[NpmRegistry]:
    with NpmRegistry() as running:
        running.add(
            "paddock-demo-npm",
            "1.0.0",
            {
                "index.js": 'module.exports = "required from the local registry";\n',
                "cli.js": "#!/usr/bin/env node\nconsole.log('run from the local registry');\n",
            },
            bin={"paddock-demo": "cli.js"},
        )
        yield running


@pytest.fixture
def apt_repo() -> Iterator[AptRepository]:
    with AptRepository() as running:
        running.add(
            "paddock-demo-data", "1.0", {"usr/share/paddock-demo/message": "from its dependency\n"}
        )
        running.add(
            "paddock-demo-apt",
            "1.0",
            {
                "usr/bin/paddock-demo-apt": "#!/bin/sh\necho 'run from the local repository'\n"
                'cat "$(dirname "$0")/../share/paddock-demo/message"\n'
            },
            # bash is in the image already: resolved against dpkg's status, not downloaded.
            depends="paddock-demo-data (>= 1.0), bash",
        )
        yield running


@pytest.fixture
def package_proxy(
    tmp_path: Path, index: PackageIndex, registry: NpmRegistry, apt_repo: AptRepository
) -> Iterator[ProxyProcess]:
    """The package proxy as the chart runs it: one registries-only policy, no credentials;
    the loopback index reached through the development-only address exception."""
    secrets_ = Secrets(tmp_path / "secrets")
    proxy = ProxyProcess(
        tmp_path,
        secrets_,
        environments={
            "packages": {
                "mode": "limited",
                "allow_package_managers": True,
                "allowed_domains": [index.host],
            }
        },
        address_exceptions=[
            f"{index.host}:{index.port}",
            f"{registry.host}:{registry.port}",
            f"{apt_repo.host}:{apt_repo.port}",
        ],
    ).start()
    yield proxy
    proxy.stop()


def _plan_env(
    tmp_path: Path,
    proxy: ProxyProcess,
    index: PackageIndex,
    *pip: str,
    npm: tuple[str, ...] = (),
    registry: NpmRegistry | None = None,
    apt: tuple[str, ...] = (),
    apt_repo: AptRepository | None = None,
) -> dict[str, str]:
    # Minted as the operator mints it: with the package proxy's key, for the pod's name.
    key = proxy.secrets.path("token_key").read_bytes().strip()
    token_file = tmp_path / "package-token"
    token_file.write_text(tokens.mint(key, POD, "packages", int(time.time())))
    plan = PackagePlan(
        dir=tmp_path / "packages",
        pip=list(pip),
        npm=list(npm),
        apt=list(apt),
        apt_sources=apt_repo.sources_line if apt_repo else None,
        proxy_url=f"http://127.0.0.1:{proxy.egress_port}",
        proxy_user=POD,
        token_file=token_file,
        pip_index_url=index.url,
        npm_registry=registry.url if registry else None,
    )
    return {PLAN_ENV: plan.model_dump_json()}


async def test_a_pip_package_is_installed_through_the_package_proxy_before_the_server_serves(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex
) -> None:
    env = _plan_env(tmp_path, package_proxy, index, "paddock-demo-pkg==1.0")
    sandbox = launch(tmp_path / "sandbox", env=env)
    try:
        # It answers only once installed, and is ready at once.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{sandbox.url}/readyz")).status_code == 200
        assert any(p.startswith("/files/paddock_demo_pkg-1.0") for p in index.requests)
        async with sandbox.client() as client:
            result = await client.call(
                "bash", {"command": f"python3 -c 'import {MODULE}; print({MODULE}.MESSAGE)'"}
            )
        assert "installed from the local index" in result.content[0].text, result
        assert "[exit code 0]" in result.content[0].text
    finally:
        sandbox.stop()
    # Every request went through the package proxy, allowed by the address exception.
    audited = [e for e in package_proxy.audit() if e.get("host") == index.host]
    assert audited, package_proxy.logs()
    assert {e["rule"] for e in audited} == {"allowlist:127.0.0.1+address-exception"}


def test_a_package_that_is_not_found_fails_the_sandbox_with_pips_words(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex
) -> None:
    env = _plan_env(tmp_path, package_proxy, index, "no-such-package-anywhere")
    with pytest.raises(RuntimeError, match=f"exited with {INSTALL_FAILED_EXIT}") as failed:
        launch(tmp_path / "sandbox", env=env)
    message = str(failed.value)
    assert "package install failed:" in message
    assert "no matching distribution found for no-such-package-anywhere" in message.lower()
    assert "pdk1." not in message  # the proxy token is not in the log


def test_a_forged_package_token_installs_nothing(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex
) -> None:
    """A wrong token: the proxy refuses (407), the install fails, the sandbox never serves."""
    env = _plan_env(tmp_path, package_proxy, index, "paddock-demo-pkg==1.0")
    (tmp_path / "package-token").write_text("pdk1.forged.token")
    with pytest.raises(RuntimeError, match=f"exited with {INSTALL_FAILED_EXIT}"):
        launch(tmp_path / "sandbox", env=env)
    assert not any(p.startswith("/files/") for p in index.requests)


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm")
async def test_an_npm_package_is_installed_and_its_module_and_command_are_found(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex, registry: NpmRegistry
) -> None:
    env = _plan_env(
        tmp_path, package_proxy, index, npm=("paddock-demo-npm@1.0.0",), registry=registry
    )
    sandbox = launch(tmp_path / "sandbox", env=env)
    try:
        assert any(p.endswith("paddock-demo-npm-1.0.0.tgz") for p in registry.requests)
        async with sandbox.client() as client:
            required = await client.call(
                "bash", {"command": "node -e 'console.log(require(\"paddock-demo-npm\"))'"}
            )
            ran = await client.call("bash", {"command": "paddock-demo"})
        assert "required from the local registry" in required.content[0].text, required
        assert "run from the local registry" in ran.content[0].text, ran
    finally:
        sandbox.stop()
    audited = [e for e in package_proxy.audit() if e.get("port") == registry.port]
    assert audited, package_proxy.logs()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
async def test_an_apt_package_and_its_dependency_are_unpacked_and_its_command_runs(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex, apt_repo: AptRepository
) -> None:
    env = _plan_env(tmp_path, package_proxy, index, apt=("paddock-demo-apt",), apt_repo=apt_repo)
    sandbox = launch(tmp_path / "sandbox", env=env)
    try:
        downloaded = {p.rsplit("/", 1)[-1] for p in apt_repo.requests if p.endswith(".deb")}
        assert downloaded == {"paddock-demo-apt_1.0_all.deb", "paddock-demo-data_1.0_all.deb"}
        async with sandbox.client() as client:
            ran = await client.call("bash", {"command": "paddock-demo-apt; echo $LD_LIBRARY_PATH"})
        text = ran.content[0].text
        assert "run from the local repository" in text, ran
        assert "from its dependency" in text, ran
        assert str(tmp_path / "packages" / "apt" / "usr" / "lib") in text
    finally:
        sandbox.stop()
    audited = [e for e in package_proxy.audit() if e.get("port") == apt_repo.port]
    assert audited, package_proxy.logs()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt")
def test_an_unknown_apt_package_fails_the_sandbox_with_apts_words(
    tmp_path: Path, package_proxy: ProxyProcess, index: PackageIndex, apt_repo: AptRepository
) -> None:
    env = _plan_env(tmp_path, package_proxy, index, apt=("no-such-deb",), apt_repo=apt_repo)
    with pytest.raises(RuntimeError, match=f"exited with {INSTALL_FAILED_EXIT}") as failed:
        launch(tmp_path / "sandbox", env=env)
    message = str(failed.value)
    assert "package install failed:" in message
    assert "Unable to locate package no-such-deb" in message
    assert "pdk1." not in message
