"""Installing an Environment's packages into a sandbox before it serves (docs/sandbox.md,
"Decision: Environment packages").

The operator renders the plan into the pod (`PLAN_ENV`, JSON): which packages, where they go,
and the package proxy that is the install's only way out, with a token of its own (a file from
the downward API). The server installs before it listens, so the pod is Ready, and claimable,
only once every package is in place; a failed install exits with `INSTALL_FAILED_EXIT` and
the installer's last words, which the operator reports in the Environment's status.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from paddock.sandbox.procs import run_in_group

PLAN_ENV = "PADDOCK_SANDBOX_PACKAGES"
INSTALL_FAILED_EXIT = 3
"""The server's exit status when a package install fails (the operator matches on it)."""
_TAIL = 1500


class PackagePlan(BaseModel):
    """What to install, where, and through which proxy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path
    """Installs go below it: `python/` (pip `--target`), `node/` (npm `--prefix`), `apt/`
    (Debian packages unpacked with `dpkg -x`)."""
    apt: list[str] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)
    npm: list[str] = Field(default_factory=list)
    proxy_url: Annotated[str, Field(pattern=r"^http://[^/@]+$")] | None = None
    """The package proxy (`http://ip:port`), the only egress of the install."""
    proxy_user: str = ""
    """The user part of the proxy credentials: what the token was minted for (the pod)."""
    token_file: Path | None = None
    """The package proxy token (not needed without a proxy)."""
    pip_index_url: str | None = None
    npm_registry: str | None = None
    apt_sources: str | None = None
    """apt's sources (`sources.list` one-line entries) in place of the image's own."""
    timeout_s: float = 600.0
    """For all installers together."""

    @property
    def python_dir(self) -> Path:
        return self.dir / "python"

    @property
    def apt_dir(self) -> Path:
        return self.dir / "apt"

    @property
    def bin_dirs(self) -> list[Path]:
        dirs = [self.dir / "python" / "bin", self.dir / "node" / "bin"]
        if self.apt:
            dirs += [
                self.apt_dir / sub
                for sub in ("usr/local/bin", "usr/bin", "bin", "usr/sbin", "sbin")
            ]
        return dirs

    def command_env(self) -> dict[str, str]:
        """What commands get so that the packages are found: Python's path and the
        installers' `bin` directories (prepended to `PATH` by the caller)."""
        env = {}
        if self.pip:
            env["PYTHONPATH"] = str(self.python_dir)
        if self.npm:
            env["NODE_PATH"] = str(self.dir / "node" / "lib" / "node_modules")
        if self.apt:
            # Unpacked libraries are not in ld.so's cache: name their directories.
            triplet = getattr(sys.implementation, "_multiarch", "")
            libs = [f"usr/lib/{triplet}", f"lib/{triplet}"] if triplet else []
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                str(self.apt_dir / sub) for sub in [*libs, "usr/lib", "lib"]
            )
        return env


class InstallFailed(Exception):
    """An installer exited in error; the message is its output's tail."""


def plan_from_env(env: dict[str, str] | os._Environ[str]) -> PackagePlan | None:
    text = env.get(PLAN_ENV)
    return PackagePlan.model_validate_json(text) if text else None


def _proxy_with_token(plan: PackagePlan, token: str) -> str | None:
    """The package proxy's URL with the install's credentials, if there is a proxy."""
    if not plan.proxy_url:
        return None
    return f"http://{plan.proxy_user}:{token}@{plan.proxy_url.removeprefix('http://')}"


def _installer_env(plan: PackagePlan, home: Path, token: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    if (url := _proxy_with_token(plan, token)) is not None:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = url
    return env


def _apt_config(plan: PackagePlan, state: Path, token: str) -> Path:
    """apt's configuration for a non-root download: private lists, cache and (with
    `apt_sources`) sources; the image's dpkg status, so that what the image already has is
    not downloaded again; the package proxy for http and (CONNECT) https mirrors. A file,
    not `-o` options, so that the token is not in any command line."""
    for sub in ("lists/partial", "cache/archives/partial", "parts"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    options = {
        "Dir::State::Lists": str(state / "lists"),
        "Dir::Cache": str(state / "cache"),
        # No root: nothing to lock, and no `_apt` user to drop to.
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "",
        "APT::Install-Recommends": "0",
        "quiet": "1",
    }
    if plan.apt_sources:
        (state / "sources.list").write_text(plan.apt_sources.rstrip("\n") + "\n")
        options["Dir::Etc::SourceList"] = str(state / "sources.list")
        options["Dir::Etc::SourceParts"] = str(state / "parts")
    if (url := _proxy_with_token(plan, token)) is not None:
        options["Acquire::http::Proxy"] = options["Acquire::https::Proxy"] = url
    config = state / "apt.conf"
    config.write_text("".join(f'{key} "{value}";\n' for key, value in options.items()))
    config.chmod(0o600)
    return config


async def _install_apt(
    plan: PackagePlan, env: dict[str, str], home: Path, deadline: float, token: str
) -> None:
    """Resolve and download with apt (as the sandbox user), then unpack every downloaded
    `.deb` into `apt_dir`. Maintainer scripts do not run."""
    state = home / "apt"
    env = {**env, "APT_CONFIG": str(_apt_config(plan, state, token))}
    await _run(["apt-get", "update"], env, deadline, token)
    await _run(
        ["apt-get", "install", "--download-only", "-y", "--", *plan.apt], env, deadline, token
    )
    plan.apt_dir.mkdir(parents=True, exist_ok=True)
    for deb in sorted((state / "cache" / "archives").glob("*.deb")):
        await _run(["dpkg", "-x", str(deb), str(plan.apt_dir)], env, deadline, token)


def _pip_command(plan: PackagePlan) -> list[str]:
    command = [
        sys.executable, "-m", "pip", "install", "--target", str(plan.python_dir),
        "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
    ]  # fmt: skip
    if plan.pip_index_url:
        command += ["--index-url", plan.pip_index_url]
        parts = urlsplit(plan.pip_index_url)
        if parts.scheme == "http" and parts.hostname:
            # A plain-HTTP mirror (air-gapped clusters, tests): pip refuses it otherwise.
            command += ["--trusted-host", parts.hostname]
    return [*command, "--", *plan.pip]


def _npm_command(plan: PackagePlan) -> list[str]:
    command = ["npm", "install", "--global", "--prefix", str(plan.dir / "node"), "--no-fund"]
    if plan.npm_registry:
        command += ["--registry", plan.npm_registry]
    return [*command, "--", *plan.npm]


async def _run(argv: list[str], env: dict[str, str], deadline: float, token: str) -> None:
    """Run one installer step with the sandbox's process runner (its whole process group is
    killed at the deadline, its output bounded); `InstallFailed` with the output's tail."""
    try:
        outcome = await run_in_group(
            argv,
            cwd=Path(env["HOME"]),
            env=env,
            time_limit=max(deadline - time.monotonic(), 0.1),
            output_limit=4 * _TAIL,
        )
    except OSError as exc:
        raise InstallFailed(f"{argv[0]}: {exc.strerror or exc}") from None
    if outcome.timed_out:
        raise InstallFailed(f"{argv[2] if argv[0] == sys.executable else argv[0]} timed out")
    if outcome.returncode:
        text = outcome.output
        if token:
            text = text.replace(token, "***")  # pip may echo the proxy URL
        raise InstallFailed(text.strip()[-_TAIL:] or f"exit status {outcome.returncode}")


async def install(plan: PackagePlan) -> float:
    """Install every package of ``plan``; seconds taken. `InstallFailed` on the first
    installer that fails."""
    started = time.monotonic()
    deadline = started + plan.timeout_s
    plan.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="paddock-install-") as home:
        token = plan.token_file.read_text().strip() if plan.token_file else ""
        env = _installer_env(plan, Path(home), token)
        if plan.apt:
            await _install_apt(plan, env, Path(home), deadline, token)
        if plan.pip:
            await _run(_pip_command(plan), env, deadline, token)
        if plan.npm:
            await _run(_npm_command(plan), env, deadline, token)
    return time.monotonic() - started
