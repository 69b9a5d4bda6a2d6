"""Binding a warm sandbox to one session: proxy settings, git wiring, files, repositories.

A sandbox is bound at most once. Binding it again for the same session returns the first
result (harness retries are safe); binding it for another session is refused, so no
sandbox ever serves two sessions.
"""

from __future__ import annotations

import asyncio
import base64
import posixpath
from pathlib import Path
from urllib.parse import quote, urlsplit

from paddock.models import FileResource, GitRepository
from paddock.sandbox.api import BindRequest, BindResult, FileStatus, RepositoryStatus
from paddock.sandbox.procs import run_in_group
from paddock.sandbox.shell import CommandEnvironment

_GIT_OUTPUT_LIMIT = 16 * 1024
_ERROR_CHARS = 2000
_GIT_CONFIG_TIMEOUT = 10.0
COMMITTER_NAME = "Paddock agent"
COMMITTER_DOMAIN = "paddock.invalid"


class AlreadyBound(Exception):
    """The sandbox serves another session."""


class BindFailed(Exception):
    """The sandbox could not be set up (git configuration failed); it should be discarded."""


class Binding:
    """The session this sandbox serves, and how it was set up."""

    def __init__(self, workdir: Path, env: CommandEnvironment, clone_timeout: float) -> None:
        self._workdir = workdir
        self._env = env
        self._clone_timeout = clone_timeout
        self._lock = asyncio.Lock()
        self._session_id: str | None = None
        self._result: BindResult | None = None

    async def bind(self, request: BindRequest) -> BindResult:
        """Bind to `request.session_id`. Raises AlreadyBound for a second session and
        BindFailed when git cannot be configured; a repository that fails to clone or a file
        that cannot be written is reported in the result instead."""
        async with self._lock:
            if self._session_id not in (None, request.session_id):
                raise AlreadyBound(f"this sandbox is bound to another session ({self._session_id})")
            if self._result is not None:
                return self._result
            # Claimed before any side effect: whatever happens next, no other session gets it.
            self._session_id = request.session_id
            authenticated, basic = _proxy_credentials(request)
            self._env.use_proxy(authenticated)
            await self._configure_git(request, authenticated, basic)
            # Files API files (no inline content) are the harness's to mount.
            written = [self._write(file) for file in request.files if file.content is not None]
            cloned = await asyncio.gather(*(self.clone(repo) for repo in request.repositories))
            self._result = BindResult(
                session_id=request.session_id,
                files=written,
                repositories=[_redacted(status, request.proxy_token) for status in cloned],
            )
            return self._result

    async def _configure_git(self, request: BindRequest, authenticated: str, basic: str) -> None:
        """Global git settings (in HOME). Every HTTP(S) remote goes through the proxy; remotes
        on credential hosts are rewritten to the proxy's `/git/<host>/` route, which git
        reaches directly (in origin form, whatever NO_PROXY says) with the same
        `Proxy-Authorization` every other request carries."""
        proxy_url, hosts = request.proxy_url, request.git_credential_hosts
        settings = [("http.proxy", authenticated), ("http.proxyAuthMethod", "basic")]
        if hosts:
            settings += [
                (f"http.{proxy_url}/.proxy", ""),
                (f"http.{proxy_url}/.extraHeader", f"Proxy-Authorization: Basic {basic}"),
            ]
            settings += [
                (f"url.{proxy_url}/git/{host}/.insteadOf", f"https://{host}/") for host in hosts
            ]
        try:
            for key, value in settings:
                await self._git_config("--global", "--replace-all", key, value)
            # Commits need an identity, and a pod's user and host name give git none it
            # accepts. Paddock's default is set only where the image configured none.
            for key, value in _default_identity(request.session_id):
                if await self._git_config("--get", key, check=False) != 0:  # any scope
                    await self._git_config("--global", key, value)
        except FileNotFoundError:
            return  # no git in this image: nothing will use these settings

    async def _git_config(self, *args: str, check: bool = True) -> int:
        """`git config ...`; its exit code. BindFailed when it fails and ``check``."""
        outcome = await run_in_group(
            ["git", "config", *args],
            cwd=self._workdir,
            env=self._env.variables(),
            time_limit=_GIT_CONFIG_TIMEOUT,
            output_limit=_GIT_OUTPUT_LIMIT,
        )
        if check and outcome.returncode != 0:
            raise BindFailed(f"git config {args[-2]} failed: {outcome.output.strip()}")
        return outcome.returncode

    def _write(self, file: FileResource) -> FileStatus:
        assert file.content is not None
        try:
            path = Path(file.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(file.content, encoding="utf-8")
        except OSError as exc:
            return FileStatus(path=file.path, ok=False, error=f"{exc.strerror or exc}")
        return FileStatus(path=file.path, ok=True)

    @property
    def session_id(self) -> str | None:
        """The session this sandbox is bound to."""
        return self._session_id

    async def clone(self, repo: GitRepository) -> RepositoryStatus:
        """Clone (and check out `branch` or `commit`) within the clone timeout; never raises.
        Through the proxy once bound (git's settings are global)."""
        name = posixpath.basename(urlsplit(repo.url).path.rstrip("/")).removesuffix(".git")
        mount_path = repo.mount_path or str(self._workdir / (name or "repository"))
        clone = ["git", "clone", "--quiet"]
        if repo.branch:
            clone += ["--branch", repo.branch]
        steps = [[*clone, "--", repo.url, mount_path]]
        if repo.commit:
            steps.append(["git", "-C", mount_path, "checkout", "--quiet", "--detach", repo.commit])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._clone_timeout
        env = {**self._env.variables(), "GIT_TERMINAL_PROMPT": "0"}
        for argv in steps:
            time_limit = max(deadline - loop.time(), 0.1)
            try:
                outcome = await run_in_group(
                    argv,
                    cwd=self._workdir,
                    env=env,
                    time_limit=time_limit,
                    output_limit=_GIT_OUTPUT_LIMIT,
                )
            except OSError as exc:
                return RepositoryStatus(
                    url=repo.url, mount_path=mount_path, ok=False, error=str(exc)
                )
            if outcome.timed_out:
                error = f"timed out after {self._clone_timeout:g} s: {outcome.output.strip()}"
            elif outcome.returncode != 0:
                error = outcome.output.strip() or f"{argv[1]} exited with {outcome.returncode}"
            else:
                continue
            return RepositoryStatus(
                url=repo.url, mount_path=mount_path, ok=False, error=error[-_ERROR_CHARS:]
            )
        return RepositoryStatus(url=repo.url, mount_path=mount_path, ok=True)


def _default_identity(session_id: str) -> list[tuple[str, str]]:
    """The committer identity of a session's commits when the image sets none: the session
    is in the address (`.invalid` is reserved, so it is never a real mailbox)."""
    return [("user.name", COMMITTER_NAME), ("user.email", f"{session_id}@{COMMITTER_DOMAIN}")]


def _proxy_credentials(request: BindRequest) -> tuple[str, str]:
    """The proxy URL with `session_id:proxy_token` in it, and that pair for Basic auth."""
    proxy = urlsplit(request.proxy_url)
    userinfo = f"{quote(request.session_id, safe='')}:{quote(request.proxy_token, safe='')}"
    pair = f"{request.session_id}:{request.proxy_token}".encode()
    return f"{proxy.scheme}://{userinfo}@{proxy.netloc}", base64.b64encode(pair).decode()


def _redacted(status: RepositoryStatus, token: str) -> RepositoryStatus:
    """Git may echo the rewritten URL, which carries the proxy token; results go to logs."""
    if status.error is None:
        return status
    error = status.error.replace(quote(token, safe=""), "***").replace(token, "***")
    return status.model_copy(update={"error": error})
