"""A session's sandbox, from the worker's side: waiting for the operator to bind one, the
bind call that gives it the session's egress (its token retried with backoff while the proxy
refuses it), built-in tool calls recorded in the tool-call journal, and asking for a
replacement when the sandbox fails."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import httpx

from paddock.eventlog import SandboxBinding, SandboxWaiter, SessionSettings, SessionState
from paddock.harness.files import GatewayFiles, SandboxFiles
from paddock.harness.interrupts import Interrupted, Interrupts
from paddock.harness.retries import Failure, call_with_retries, session_error
from paddock.harness.sessionlog import SessionLog
from paddock.harness.settings import WorkerSettings
from paddock.harness.tools import READ_ONLY_TOOLS
from paddock.harness.transcript import ToolCall
from paddock.models import GitRepository, parse_duration
from paddock.sandbox import SandboxAlreadyBound, SandboxClient, SandboxError, SandboxUnavailable

log = logging.getLogger(__name__)


class EgressUnavailable(Exception):
    """The credential proxy gave no egress token for the session's sandbox within the bind
    retries (each refusal is in the log as a `session.error`): the turn cannot go on."""


class SandboxSession:
    """The sandbox of one session during one worker's run of it."""

    def __init__(
        self,
        session_id: str,
        state: SessionState,
        waiter: SandboxWaiter,
        http: httpx.AsyncClient,
        settings: WorkerSettings,
        session_settings: SessionSettings | None,
        interrupts: Interrupts,
        session: SessionLog,
    ) -> None:
        self.session_id = session_id
        self.state = state
        self.waiter = waiter
        self.http = http
        self.settings = settings
        self.limits = settings.spec.limits
        self.session_settings = session_settings
        self.interrupts = interrupts
        self.session = session
        self.clients: dict[str, SandboxClient] = {}
        """One client per sandbox pod used in this run, bound to the session."""
        self.files: dict[str, SandboxFiles] = {}
        self.replacing = False
        """A replacement was asked for (`dead`): the next call waits for it without asking
        again, so that one failure is one request (docs/harness.md)."""
        """What was mounted into and collected from each of those pods."""

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def execute(self, call: ToolCall) -> tuple[str, bool]:
        """Run a built-in call in the session's sandbox: (result text, is_error).
        `EgressUnavailable` when the sandbox cannot be bound to the session."""
        binding = await self.binding()
        if binding is None:
            wait = self.limits.sandbox_wait_timeout
            return f"No sandbox became available within {wait}; the call did not run.", True
        started_in = await self.state.started_in(self.session_id, call.id)
        if (
            started_in is not None
            and started_in != binding.pod
            and call.name not in READ_ONLY_TOOLS
        ):
            # Another worker started it in a sandbox that is gone: it may or may not have run.
            return (
                "This call was interrupted by an infrastructure failure and its outcome is "
                "unknown: it may or may not have taken effect. Check the state before "
                "running it again."
            ), True
        # A retry in the same sandbox is safe: the sandbox runs each call id at most once.
        await self.state.mark_started(self.session_id, call.id, binding.pod)
        timeout = parse_duration(self.limits.tool_timeout)
        client: SandboxClient | None = None
        try:
            # Binding fails like a call does (a sandbox bound elsewhere, or broken): the
            # sandbox is replaced and the model told, instead of the turn failing and retrying.
            await self.refresh_settings()
            client = await self.client(binding)
            await self.mount(binding.pod, client)
            result = await self.interrupts.interruptible(
                client.call(call.name, call.input, call_id=call.id, timeout=timeout)
            )
        except Interrupted:
            # A user interrupt stops the call. A lost lease does not: the session's next
            # worker resumes this very call id in this sandbox and takes its result.
            if client is not None and not self.interrupts.lease_lost.is_set():
                await _cancel(client, call.id)
            raise
        except SandboxError as exc:
            if not (isinstance(exc, SandboxAlreadyBound) or exc.status >= 500):
                return f"The sandbox refused the call: {exc.message}", True
            await self.replace(binding)
            return (
                f"The sandbox cannot serve this session ({exc}); a fresh sandbox is being prepared.",
                True,
            )
        except SandboxUnavailable as exc:
            await self.replace(binding)
            return (
                f"The sandbox failed during this call ({exc}); its outcome is unknown. A "
                "fresh sandbox is being prepared: files written earlier may be gone."
            ), True
        text = "\n".join(block.text for block in result.content if block.type == "text")
        return text, result.is_error

    def _gateway_files(self, settings: SessionSettings | None) -> GatewayFiles | None:
        url = self.settings.gateway_url
        if url is None or settings is None or not settings.gateway_token:
            return None
        # A thread's files are its session's: mounted from, and its outputs kept as, the
        # files of the session whose coordinator started it.
        owner = settings.parent_session_id or self.session_id
        return GatewayFiles(self.http, url, owner, settings)

    async def refresh_settings(self) -> None:
        """Read the session's settings afresh: resources may have been added since the run
        began, and are mounted before the next call."""
        settings = await self.state.settings(self.session_id)
        if settings is not None:
            self.session_settings = settings

    async def mount(self, pod: str, client: SandboxClient) -> None:
        """Mount the session's Files API files the sandbox lacks, and clone the repositories
        added since it was bound (a bound sandbox only: clones go through the proxy)."""
        settings = self.session_settings
        if settings is None:
            return
        done = self.files.setdefault(pod, SandboxFiles())
        files = self._gateway_files(settings)
        if files is not None:
            await files.mount(settings, client, done)
        if not self._binds():
            return
        for repository in settings.repositories:
            key = _repository_key(repository)
            if key in done.mounted:
                continue
            result = await client.mount_repository(key, repository)
            if not result.ok:
                log.warning("repository %s was not cloned: %s", repository.url, result.error)
            done.mounted.add(key)

    def _binds(self) -> bool:
        return bool(self.settings.proxy_admin_url and self.settings.proxy_egress_url)

    async def collect_outputs(self) -> None:
        """Upload what the agent left in the outputs directory of the sandboxes this run
        used (none used, nothing to collect: no sandbox is bound for it)."""
        files = self._gateway_files(self.session_settings)
        if files is None:
            return
        for pod, client in list(self.clients.items()):
            await files.upload_outputs(client, self.files.setdefault(pod, SandboxFiles()))

    async def replace(self, binding: SandboxBinding) -> None:
        """Ask the operator for a fresh sandbox in place of ``binding``'s, and forget it."""
        await self.state.request_sandbox(self.session_id, dead_pod=binding.pod)
        self.replacing = True
        client = self.clients.pop(binding.pod, None)
        if client is not None:
            await client.aclose()

    async def binding(self) -> SandboxBinding | None:
        """The session's sandbox, waiting for the operator to bind one (first tool call only:
        the model was never kept waiting for it)."""
        binding = await self.state.sandbox(self.session_id)
        if binding is not None:
            self.replacing = False
            return binding
        if not self.replacing:
            await self.state.request_sandbox(self.session_id)
        self.replacing = False  # after a wait that timed out, the next call asks again
        timeout = parse_duration(self.limits.sandbox_wait_timeout)
        return await self.waiter.wait(self.session_id, timeout)

    async def client(self, binding: SandboxBinding) -> SandboxClient:
        """The client of ``binding``'s sandbox, bound to the session on first use when the
        worker has a proxy to give it egress through."""
        client = self.clients.get(binding.pod)
        if client is not None:
            return client
        client = SandboxClient(binding.url, binding.token)
        if self.settings.proxy_admin_url and self.settings.proxy_egress_url:
            settings = self.session_settings or SessionSettings(namespace="", name="")
            bound = await client.bind(
                self.session_id,
                await by_address(self.settings.proxy_egress_url),
                await self.proxy_token(settings.environment),
                repositories=settings.repositories,
                files=[file for file in settings.files if file.content is not None],
                git_credential_hosts=[c.host for c in self.settings.spec.credentials.hosts],
            )
            # Cloned at bind: not again when mounting what was added later. Only what the
            # bind reports: a sandbox bound in an earlier run returns that first bind's result,
            # without the repositories added since, which `mount` then clones.
            cloned = {(r.url, r.mount_path) for r in bound.repositories}
            done = self.files.setdefault(binding.pod, SandboxFiles())
            done.mounted.update(
                _repository_key(r)
                for r in settings.repositories
                if (r.url, r.mount_path) in cloned
                or (r.mount_path is None and any(url == r.url for url, _ in cloned))
            )
        self.clients[binding.pod] = client
        return client

    async def proxy_token(self, environment: str | None) -> str:
        """An egress token of the credential proxy for the session's sandbox. The proxy may
        refuse it for a while (a ConfigMap that names a new Environment reaches a running pod
        up to a minute late) or be unreachable: each failure is appended as a `session.error`
        and retried with backoff; `EgressUnavailable` once the retries are exhausted. A user
        interrupt stops the waiting (`Interrupted`)."""
        failures: list[Failure] = []

        async def mint() -> str:
            response = await self.http.post(
                f"{self.settings.proxy_admin_url}/v1/session-tokens",
                json={"session_id": self.session_id, "environment": environment or "default"},
            )
            response.raise_for_status()
            return str(response.json()["token"])

        async def report(failure: Failure, will_retry: bool) -> None:
            failures.append(failure)
            await self.session.emit(session_error(failure, will_retry))

        token = await self.interrupts.interruptible(
            call_with_retries(mint, self.settings.bind_retry, proxy_failure, report)
        )
        if token is None:
            raise EgressUnavailable(failures[-1].message)
        return token


def proxy_failure(exc: Exception) -> Failure | None:
    """A failed token request as `session.error` reports it. A refusal is retried as well:
    the proxy's config may not name the session's environment yet."""
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            reason = str(exc.response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            reason = exc.response.text[:200]
        status = exc.response.status_code
        return Failure(
            "unknown_error",
            f"the credential proxy refused an egress token for the sandbox (HTTP {status}: "
            f"{reason})",
            True,
        )
    if isinstance(exc, httpx.TransportError):
        return Failure("unknown_error", f"the credential proxy is unreachable ({exc!r})", True)
    return None


def _repository_key(repository: GitRepository) -> str:
    return f"repository:{repository.url}:{repository.mount_path or ''}"


async def by_address(url: str) -> str:
    """``url`` with its host resolved to an address: sandboxes in `none` and `limited` mode
    have no resolver, so they get the proxy Service's address, not its name. A name that does
    not resolve here (yet: the local runner names a Service only once its pods are ready) is
    handed over as it is, as before sandboxes lost their resolver: egress then fails in the
    sandbox, with the proxy's name in the error, instead of the sandbox being replaced."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return url
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        log.warning("the proxy address %s does not resolve (%s): handing over the name", host, exc)
        return url
    address = str(found[0][4][0])
    literal = f"[{address}]" if ":" in address else address
    return parts._replace(netloc=f"{literal}:{parts.port}" if parts.port else literal).geturl()


async def _cancel(client: SandboxClient, call_id: str) -> None:
    try:
        await client.cancel(call_id)
    except (SandboxUnavailable, SandboxError):
        log.warning("could not cancel call %s in its sandbox", call_id)
