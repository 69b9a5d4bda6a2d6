"""Sandboxes: an Environment's warm pool, and providing one sandbox to each session:
steps 2 and 3 of the sandbox protocol (`paddock.eventlog.sandboxes`), the claim and the
binding.

A thread (docs/harness.md, "Threads") gets a sandbox of its own the same way: claimed from
the parent Session's Environment, owned by the parent Session (deleting it deletes them),
labelled with the thread's session id, the Agent that runs the thread and the parent's
session id (`SandboxFor`).

Pods move from `warm` (owned by the Environment) to `bound` (owned by the Session,
labelled with its id and its Agent, which the Agent's `sandbox_access_policy` selects) by a
JSON patch that tests the pod's resourceVersion, so two
operators (or two sessions) can never claim the same pod. When the pool is empty, a pod is
created for the session directly (`cold`) and bound once it is ready. A bound pod is
never returned to the pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paddock.eventlog import SandboxBinding, SessionNotFound
from paddock.kube import JSON_PATCH, ApiError, Conflict, NotFound
from paddock.models import API_VERSION, Environment, EnvironmentSpec, Session
from paddock.operator import labels as L
from paddock.operator import metrics, render
from paddock.operator.informer import Informer
from paddock.operator.observed import Pod, Terminated
from paddock.operator.retry import FIRST_S, retry_delay_s
from paddock.operator.runtime import Runtime
from paddock.operator.status import (
    environment_status,
    packages_condition,
    pod_dead,
    pod_failure,
    pod_ready,
)
from paddock.proxy import mint_token
from paddock.sandbox import INSTALL_FAILED_EXIT

log = logging.getLogger(__name__)
DEFAULT_SANDBOX_IMAGE = EnvironmentSpec().image


@dataclass
class StartFailures:
    """Sandbox pods of one Environment that failed to start, in a row. While there are
    any, one pod at a time is started (for the pool or for a session), each after the
    operator's retry delay (`retry.retry_delay_s`, doubling): a broken image costs a few
    pods a minute, not one a second."""

    count: int = 0
    message: str = ""
    retry_at: float = 0.0
    """`time.monotonic()` before which no new sandbox pod of the Environment is created."""
    seen: set[str] = field(default_factory=set)
    """Pods already counted."""
    rejected: bool = False
    """The last failure: the apiserver refused to create the pod."""
    install: str | None = None
    """The last failure was the Environment's package install: the installer's words."""

    def failed(
        self, pod: str, message: str, *, rejected: bool = False, install: str | None = None
    ) -> None:
        if pod in self.seen:
            return
        self.seen.add(pod)
        self.count += 1
        self.message, self.rejected, self.install = message, rejected, install
        self.retry_at = time.monotonic() + retry_delay_s(self.count)


def refusal(exc: ApiError) -> str | None:
    """The apiserver's message when it refuses a pod for what it is (invalid, forbidden by
    an admission policy or a quota), not for how things are (conflict, overload, outage)."""
    if exc.status not in (400, 403, 422):
        return None
    try:
        return str(json.loads(exc.body).get("message") or exc.body)[:1000]
    except ValueError:
        return exc.body[:1000]


def start_failure(pod: dict[str, Any]) -> str | None:
    """Why ``pod`` failed, if it did (phase `Failed`): its container's last words."""
    status = pod.get("status") or {}
    if status.get("phase") != "Failed":
        return None
    failure = pod_failure(Pod(pod))
    return (
        failure[1] if failure else status.get("message") or f"pod {pod['metadata']['name']} failed"
    )


def install_failure(pod: dict[str, Any]) -> Terminated | None:
    """The sandbox container's end if it was a failed package install."""
    for container in Pod(pod).containers:
        ended = container.terminated
        if container.name == "sandbox" and ended and ended.exit_code == INSTALL_FAILED_EXIT:
            return ended
    return None


def _seconds_between(start: str, end: datetime) -> float | None:
    try:
        return (end - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def with_image_default(environment: Environment, image: str | None) -> Environment:
    """The Environment with the operator's sandbox image where it uses the built-in default."""
    if not image or environment.spec.image != DEFAULT_SANDBOX_IMAGE:
        return environment
    spec = environment.spec.model_copy(update={"image": image})
    return environment.model_copy(update={"spec": spec})


def pool_index(pod: dict[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, Environment, state) of a sandbox pod, for `Informer.by("pool", ...)`."""
    labels = pod["metadata"].get("labels") or {}
    if not labels.get(L.ENVIRONMENT):
        return None
    return pod["metadata"]["namespace"], labels[L.ENVIRONMENT], labels.get(L.SANDBOX_STATE, "")


def session_index(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, session id) of a bound sandbox pod, for `Informer.by("session", ...)`."""
    session_id = (pod["metadata"].get("labels") or {}).get(L.SESSION_ID)
    return (pod["metadata"]["namespace"], session_id) if session_id else None


def tree_index(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, parent session id) of a thread's sandbox pod, for `Informer.by("tree",
    ...)`: the sandboxes of a coordinator's threads."""
    parent = (pod["metadata"].get("labels") or {}).get(L.PARENT_SESSION_ID)
    return (pod["metadata"]["namespace"], parent) if parent else None


@dataclass(frozen=True)
class SandboxFor:
    """Whom a bound sandbox serves: a session of ``agent`` (which selects it in its
    `sandbox_access_policy`); for a thread, also the session of the coordinator that started
    it (``parent``), whose Session owns the pod."""

    session_id: str
    agent: str
    parent: str | None = None

    def labels(self) -> dict[str, str]:
        labels = {L.SANDBOX_STATE: "bound", L.SESSION_ID: self.session_id, L.AGENT: self.agent}
        if self.parent is not None:
            labels[L.PARENT_SESSION_ID] = self.parent
        return labels


def cold_pod(
    pod: dict[str, Any], target: SandboxFor, owners: list[dict[str, Any]]
) -> dict[str, Any]:
    """``pod`` (a rendered sandbox pod) started bound to ``target``: labelled, owned by
    ``owners`` (the Session)."""
    meta = pod["metadata"]
    return {
        **pod,
        "metadata": {
            **meta,
            "labels": {**meta["labels"], **target.labels()},
            "annotations": {**meta["annotations"], L.CLAIM: "cold"},
            "ownerReferences": owners,
        },
    }


class Sandboxes:
    """Pools and bindings; pods are read from the pod informer (`rt.informers["Pod"]`)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.kube = rt.kube
        self._cold_started: dict[str, float] = {}
        self._claiming: set[tuple[str, str]] = set()
        self._refused: dict[tuple[str, str], str] = {}  # pod -> resourceVersion a claim failed at
        self._binding: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.failures: dict[tuple[str, str], StartFailures] = {}
        self._served: set[str] = set()  # uids of pods seen ready
        self._measured: set[str] = set()  # uids of pods whose package install was measured
        self.wanting: set[str] = set()
        """Sessions whose sandbox waits for their Environment's backoff to pass."""
        self.replacing: dict[str, float] = {}
        """Sessions whose bound sandbox is lost, with when that was first known (wall clock:
        a worker's report, by its stream id, or the operator seeing the pod dead or gone):
        the replacement is measured up to its binding."""
        self.schedule: Callable[[tuple[str, str, str], float], None] = lambda key, delay: None
        """Set by the `Controller`: handle ``key`` (kind, namespace, name) again after
        ``delay`` seconds."""

    def _may_start(self, namespace: str, environment: str) -> float:
        """0 when a sandbox pod of the Environment may be created now, else how many
        seconds until one may (while failing: after the backoff, one start at a time)."""
        failures = self.failures.get((namespace, environment))
        if failures is None or not failures.count:
            return 0.0
        wait = failures.retry_at - time.monotonic()
        if wait > 0:
            return wait
        starting = [
            p
            for state in ("warm", "bound")
            for p in self.pool_pods(namespace, environment, state)
            if not pod_dead(p) and not pod_ready(p)
        ]
        return FIRST_S if starting else 0.0

    def note_start(self, pod: dict[str, Any]) -> None:
        """Count a sandbox pod that failed before it ever served, or clear the count once
        one serves (a pod that served and then died is a sandbox lost, not a failed start)."""
        meta = pod["metadata"]
        key = (meta["namespace"], (meta.get("labels") or {}).get(L.ENVIRONMENT, ""))
        self._measure_install(pod)
        if pod_ready(pod):
            if len(self._served) > 10_000:
                self._served.clear()
            self._served.add(meta.get("uid", ""))
            self.failures.pop(key, None)
            return
        if meta.get("uid", "") in self._served:
            return
        message = start_failure(pod)
        if message is not None:
            ended = install_failure(pod)
            words = ended.message.strip()[-1000:] if ended else None
            self.failures.setdefault(key, StartFailures()).failed(
                pod["metadata"]["name"], message, install=words or (message if ended else None)
            )

    def _measure_install(self, pod: dict[str, Any]) -> None:
        """Observe a package install's duration once per pod: from the sandbox container's
        start to the moment the pod is seen ready, or to the installer's failure."""
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        if L.PACKAGES not in labels or meta.get("uid", "") in self._measured:
            return
        seconds, outcome = None, ""
        ended = install_failure(pod)
        if ended is not None and ended.started_at and ended.finished_at:
            finished = datetime.fromisoformat(ended.finished_at.replace("Z", "+00:00"))
            seconds, outcome = _seconds_between(ended.started_at, finished), "failed"
        elif pod_ready(pod):
            started = next((c.started_at for c in Pod(pod).containers if c.name == "sandbox"), "")
            seconds, outcome = _seconds_between(started, datetime.now(UTC)), "installed"
        if seconds is None:
            return
        if len(self._measured) > 10_000:
            self._measured.clear()
        self._measured.add(meta.get("uid", ""))
        metrics.PACKAGE_INSTALL_SECONDS.labels(
            meta["namespace"], labels.get(L.ENVIRONMENT, ""), outcome
        ).observe(max(seconds, 0.0))

    def lost(self, session_id: str, known_at: float) -> None:
        """The session's bound sandbox is lost, as known at ``known_at`` (wall clock): its
        replacement is measured from the first report."""
        self.replacing[session_id] = min(known_at, self.replacing.get(session_id, known_at))

    def served(self, pod: dict[str, Any]) -> bool:
        """Whether ``pod`` was seen ready: its failure loses a sandbox, not a start."""
        return pod["metadata"].get("uid", "") in self._served

    @property
    def pods(self) -> Informer:
        return self.rt.informers["Pod"]

    def _effective(self, environment: Environment) -> Environment:
        return with_image_default(environment, self.rt.settings.sandbox_image)

    def session_pods(self, namespace: str, session_id: str) -> list[dict[str, Any]]:
        return self.pods.by("session", (namespace, session_id))

    def pool_pods(self, namespace: str, environment: str, state: str) -> list[dict[str, Any]]:
        return self.pods.by("pool", (namespace, environment, state))

    @asynccontextmanager
    async def one_change(self, session_id: str) -> AsyncIterator[None]:
        """One change to a session's sandbox at a time in this process: a bind, a release,
        or the controller's reaction to the pod's events."""
        entry = self._binding.setdefault(session_id, (asyncio.Lock(), [0]))
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._binding[session_id]

    # --- the warm pool ---------------------------------------------------------------

    async def reconcile_pool(self, original: Environment) -> None:
        """Replace stale and dead pooled pods, start missing ones, and report the status.

        Only the `Controller` calls this: one reconcile of a pool at a time, in the
        replica that holds the leader lease, reading pods from the informer."""
        model = self._effective(original)
        namespace, name = render.namespace_of(model), render.name_of(model)
        installing = self._package_proxy is not None and render.installs_packages(model)
        mirrors = self.rt.settings.render.package_mirrors if installing else None
        current = render.sandbox_template_hash(model, mirrors)
        bound = sum(1 for p in self.pool_pods(namespace, name, "bound") if not pod_dead(p))
        warm, claiming = [], []
        for pod in self.pool_pods(namespace, name, "warm"):
            self.note_start(pod)
            if (namespace, pod["metadata"]["name"]) in self._claiming:
                claiming.append(pod)  # counted, never deleted: the claim decides its fate
            elif pod_dead(pod) or pod["metadata"]["labels"].get(L.TEMPLATE_HASH) != current:
                if not pod["metadata"].get("deletionTimestamp"):
                    await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
            else:
                warm.append(pod)
        warm = claiming + warm
        size = model.spec.warm_pool.size
        missing = size - len(warm)
        failures = self.failures.get((namespace, name))
        if missing > 0 and failures is not None and failures.count:
            wait = self._may_start(namespace, name)
            if wait:
                missing = 0
                self.schedule(("pool", namespace, name), wait)
            else:
                missing = 1  # one start at a time until one serves
        if missing > 0:
            new_pods = [await self._new_pod(model) for _ in range(missing)]
            replies = await asyncio.gather(
                *(self.kube.create(pod) for pod in new_pods), return_exceptions=True
            )
            created = [r for r in replies if isinstance(r, dict)]
            for pod in created:  # known at once, even if another create failed
                self.pods.store(pod)
            for reply in replies:
                if isinstance(reply, ApiError) and (refused := refusal(reply)) is not None:
                    # Said in the status and tried again after the backoff, not every second.
                    self._refused_start(namespace, name, refused)
                    self.schedule(("pool", namespace, name), self._may_start(namespace, name))
                elif isinstance(reply, BaseException):
                    raise reply
            warm.extend(created)
        for pod in warm[max(size, len(claiming)) :]:  # the pool shrank
            await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
        warm = warm[:size]
        failures = self.failures.get((namespace, name))
        status = environment_status(
            model,
            ready=sum(1 for pod in warm if pod_ready(pod)),
            bound=bound,
            template_hash=current,
            failures=(failures.count, failures.message, failures.rejected) if failures else None,
            packages=packages_condition(
                model,
                proxy_configured=self._package_proxy is not None,
                install_failed=failures.install if failures and failures.count else None,
                ready=sum(1 for pod in warm if pod_ready(pod)),
            ),
            now=datetime.now(UTC),
        )
        for state, count in (
            ("ready", status["warmPool"]["ready"]),
            ("warm", len(warm)),
            ("bound", bound),
        ):
            metrics.WARM_POOL.labels(namespace, name, state).set(count)
        if original.status is None or status != original.status.to_k8s():
            applied = await self.kube.apply_status(
                API_VERSION, "Environment", namespace, name, status, "paddock"
            )
            environments = self.rt.informers.get("Environment")
            if environments is not None and applied:
                environments.store(applied)

    @property
    def _package_proxy(self) -> tuple[str, str] | None:
        """(URL, token key file) of the package proxy, if the operator has one."""
        settings = self.rt.settings
        url, key_file = settings.render.package_proxy_url, settings.package_token_key_file
        return (url, key_file) if url and key_file else None

    async def _package_install(
        self, environment: Environment, pod_name: str
    ) -> render.PackageInstall | None:
        """How a new sandbox of ``environment`` installs its packages: the package proxy's
        address (resolved here: the sandbox has no resolver) and a token for the pod."""
        proxy = self._package_proxy
        if proxy is None or not render.installs_packages(environment):
            return None
        url, key_file = proxy
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or render.EGRESS_PORT
        found = await asyncio.get_running_loop().getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        address = str(found[0][4][0])
        address = f"[{address}]" if ":" in address else address
        key = (await asyncio.to_thread(Path(key_file).read_bytes)).strip()
        settings = self.rt.settings.render
        return render.PackageInstall(
            proxy_address=f"http://{address}:{port}",
            token=mint_token(key, pod_name, render.PACKAGE_POLICY, int(time.time())),
            pip_index_url=settings.pip_index_url,
            npm_registry=settings.npm_registry,
            apt_sources=settings.apt_sources,
        )

    async def _new_pod(self, environment: Environment) -> dict[str, Any]:
        name = f"{render.name_of(environment)}-{secrets.token_hex(4)}"
        install = await self._package_install(environment, name)
        pod = render.sandbox_pod(environment, name, secrets.token_urlsafe(32), install)
        # Who made it: with several replicas, only the holder of the leader lease does.
        pod["metadata"]["annotations"][L.CREATED_BY] = self.rt.settings.identity
        return pod

    # --- binding ---------------------------------------------------------------------

    async def provide(
        self,
        session: Session,
        session_id: str,
        environment: Environment,
        *,
        dead: str | None = None,
        thread: SandboxFor | None = None,
    ) -> str:
        """Give the session a sandbox (claim a warm pod or start a cold one, and record the
        binding); returns `existing`, `warm`, `cold` (the binding is recorded when it is
        ready) or `waiting` (its Environment's pods fail to start: a cold start waits for
        the backoff, and the controller tries again then). ``dead``: a pod the harness
        found dead, which the informer may not show as dead yet; it is never bound again.
        ``thread``: the session is a thread of ``session`` (`SandboxFor.parent`), run by
        another Agent. Callers hold `one_change(session_id)`."""
        target = thread or SandboxFor(session_id, _agent_of(session))
        started = time.monotonic()
        namespace, environment_name = render.namespace_of(environment), render.name_of(environment)
        if await self.rt.state.tenant(namespace).sandbox(session_id) is not None:
            return "existing"
        own = [
            p
            for p in self.session_pods(namespace, session_id)
            if not pod_dead(p) and p["metadata"]["name"] != dead
        ]
        if own:  # a cold sandbox is starting, or one is bound and not recorded yet
            if pod_ready(own[0]):
                await self.record(session_id, own[0])
            return "existing"
        for pod in self._claimable(namespace, environment_name):
            claimed = await self._claim(pod, session, target)
            if claimed is not None:
                await self.record(session_id, claimed)
                metrics.CLAIM_SECONDS.labels("warm").observe(time.monotonic() - started)
                return "warm"
        wait = self._may_start(namespace, environment_name)
        if wait:
            self.wanting.add(session_id)
            self.schedule(("sandbox", namespace, session_id), wait)
            return "waiting"
        self.wanting.discard(session_id)
        pod = cold_pod(
            await self._new_pod(self._effective(environment)), target, _owned_by(session)
        )
        self._cold_started[session_id] = started
        try:
            self.pods.store(await self.kube.create(pod))
        except ApiError as exc:
            if (refused := refusal(exc)) is None:
                raise
            self._refused_start(namespace, environment_name, refused)
            self.wanting.add(session_id)
            self.schedule(
                ("sandbox", namespace, session_id), self._may_start(namespace, environment_name)
            )
            self.schedule(("pool", namespace, environment_name), 0)  # its status says why
            return "waiting"
        return "cold"

    def _refused_start(self, namespace: str, environment: str, message: str) -> None:
        failures = self.failures.setdefault((namespace, environment), StartFailures())
        failures.failed(f"refused-{secrets.token_hex(4)}", message, rejected=True)

    def _claimable(self, namespace: str, environment: str) -> list[dict[str, Any]]:
        """Ready pooled pods nobody here is claiming, in random order (claims by other
        replicas then rarely race for the same pod)."""
        if len(self._refused) > 1000:  # forget pods that are gone
            self._refused = {k: v for k, v in self._refused.items() if self.pods.get(*k)}
        ready = []
        for pod in self.pool_pods(namespace, environment, "warm"):
            key = (namespace, pod["metadata"]["name"])
            if key in self._claiming or not pod_ready(pod):
                continue
            refused = self._refused.get(key)
            if refused is not None:
                if refused == pod["metadata"]["resourceVersion"]:
                    continue  # a claim failed at this version: wait for the newer one
                del self._refused[key]
            ready.append(pod)
        return random.sample(ready, len(ready))

    async def _claim(
        self, pod: dict[str, Any], session: Session, target: SandboxFor
    ) -> dict[str, Any] | None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        patch = claim_patch(
            pod, target.session_id, target.agent, _owned_by(session), parent=target.parent
        )
        self._claiming.add(key)
        try:
            claimed = await self.kube.patch(
                "v1", "Pod", meta["namespace"], meta["name"], patch, content_type=JSON_PATCH
            )
        except (Conflict, NotFound):
            self._refused[key] = meta["resourceVersion"]
            return None  # claimed by someone else, or gone: try the next one
        finally:
            self._claiming.discard(key)
        self.pods.store(claimed)
        return claimed

    async def record(self, session_id: str, pod: dict[str, Any]) -> None:
        """Write the binding the harness reads; a cold start is measured up to here."""
        meta = pod["metadata"]
        claim = meta.get("annotations", {}).get(L.CLAIM, "warm")
        if claim == "cold" and L.PACKAGES in (meta.get("labels") or {}):
            # As the warm claim does: no way to the package proxy once it serves a session.
            pod = await self.kube.patch(
                "v1", "Pod", meta["namespace"], meta["name"], install_done_patch(pod),
                content_type=JSON_PATCH,
            )  # fmt: skip
            self.pods.store(pod)
            meta = pod["metadata"]
        binding = SandboxBinding(
            url=f"http://{pod['status']['podIP']}:{render.SANDBOX_PORT}",
            token=meta["annotations"][L.SANDBOX_TOKEN],
            pod=meta["name"],
            claim=claim,
        )
        try:
            await self.rt.state.tenant(meta["namespace"]).bind_sandbox(session_id, binding)
        except SessionNotFound:
            return
        started = self._cold_started.pop(session_id, None)
        if started is not None:
            metrics.CLAIM_SECONDS.labels("cold").observe(time.monotonic() - started)
        reported = self.replacing.pop(session_id, None)
        if reported is not None:
            metrics.SANDBOX_REPLACE_SECONDS.observe(max(0.0, time.time() - reported))

    def tree_pods(self, namespace: str, session_id: str) -> list[dict[str, Any]]:
        """The sandboxes of the threads the session's coordinator started."""
        return self.pods.by("tree", (namespace, session_id))

    async def release(self, namespace: str, session_id: str) -> None:
        """Forget the binding (so no worker uses it again), then delete the sandboxes; the
        same for every thread the session's coordinator started (from the log's record of
        them and from the pods' labels, so neither a pod nor a binding is left)."""
        threads = set(await self.rt.log.tenant(namespace).threads_of(session_id))
        threads |= {
            p["metadata"]["labels"][L.SESSION_ID] for p in self.tree_pods(namespace, session_id)
        }
        for target in [session_id, *sorted(threads)]:
            await self._release_one(namespace, target)

    async def _release_one(self, namespace: str, session_id: str) -> None:
        async with self.one_change(session_id):
            await self.rt.state.tenant(namespace).unbind_sandbox(session_id)
            self.wanting.discard(session_id)
            for pod in self.session_pods(namespace, session_id):
                if not pod["metadata"].get("deletionTimestamp"):
                    await self.kube.delete("v1", "Pod", namespace, pod["metadata"]["name"])
            self._cold_started.pop(session_id, None)
            self.replacing.pop(session_id, None)


def claim_patch(
    pod: dict[str, Any],
    session_id: str,
    agent: str,
    owners: list[dict[str, Any]],
    *,
    parent: str | None = None,
) -> list[dict[str, Any]]:
    """The JSON patch that claims warm ``pod`` for a session of ``agent``: it applies only
    to the version read (two claimers never both win), relabels the pod `bound` with the
    session and the Agent (and, for a thread, its ``parent`` session), and gives it to
    ``owners`` (the Session)."""
    meta = pod["metadata"]
    thread = (
        [{"op": "add", "path": f"/metadata/labels/{_escape(L.PARENT_SESSION_ID)}", "value": parent}]
        if parent is not None
        else []
    )
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        {
            "op": "replace",
            "path": f"/metadata/labels/{_escape(L.SANDBOX_STATE)}",
            "value": "bound",
        },
        {"op": "add", "path": f"/metadata/labels/{_escape(L.SESSION_ID)}", "value": session_id},
        # Only now may the Agent's harness pods reach it, and it the Agent's proxies.
        {"op": "add", "path": f"/metadata/labels/{_escape(L.AGENT)}", "value": agent},
        *thread,
        {"op": "add", "path": f"/metadata/annotations/{_escape(L.CLAIM)}", "value": "warm"},
        {"op": "replace", "path": "/metadata/ownerReferences", "value": owners},
        *install_done_patch(pod),
    ]


def install_done_patch(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch operations that end a sandbox's package install: the label that lets
    it reach the package proxy and the proxy token go (none for a sandbox without packages)."""
    meta = pod["metadata"]
    patch: list[dict[str, Any]] = []
    if L.PACKAGES in (meta.get("labels") or {}):
        patch.append({"op": "remove", "path": f"/metadata/labels/{_escape(L.PACKAGES)}"})
    if L.PACKAGE_TOKEN in (meta.get("annotations") or {}):
        patch.append({"op": "remove", "path": f"/metadata/annotations/{_escape(L.PACKAGE_TOKEN)}"})
    return patch


def _agent_of(session: Session) -> str:
    return session.spec.agent_ref.name


def _owned_by(session: Session) -> list[dict[str, Any]]:
    meta = session.metadata
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "Session",
            "name": meta.name,
            "uid": meta.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
