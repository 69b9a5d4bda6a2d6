"""One pod run as local processes: its network namespace, volumes (ConfigMaps and Secrets
refreshed while it runs), containers, readiness probes, restarts, and the status it reports to
the apiserver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from paddock.kube import ApiError, KubeClient, NotFound
from paddock.runner import spec
from paddock.runner.network import PodNetwork

log = logging.getLogger(__name__)

SUPERVISE_SECONDS = 0.5
"""How often containers are probed and restarts looked at; an exit is seen at once."""
MAX_BACKOFF_SECONDS = 30.0
TERMINATION_LOG_BYTES = 2048
"""What a kubelet keeps of a failed container's log for `FallbackToLogsOnError`."""
DEFAULT_GRACE_SECONDS = 10.0
"""Grace for a pod that names none (Kubernetes' default is 30 s; a dev loop wants less)."""


@dataclass
class Container:
    name: str
    definition: dict[str, Any]
    process: asyncio.subprocess.Process | None = None
    state: str = "waiting"
    reason: str = "ContainerCreating"
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    exit_code: int = 0
    restarts: int = 0
    ready: bool = False
    restart_at: float = 0.0
    log_offset: int = 0
    """Where the current run's output starts in the container's log file."""
    last: dict[str, Any] | None = None
    """The previous run's end: exit_code, started, finished, message."""
    message: str = ""

    def seen(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "exit_code": self.exit_code,
            "restarts": self.restarts,
            "ready": self.ready,
            "message": self.message,
            "last": self.last,
        }


class LocalPod:
    def __init__(
        self,
        pod: dict[str, Any],
        kube: KubeClient,
        network: PodNetwork,
        state_dir: Path,
        images: dict[str, str] | None = None,
    ) -> None:
        self.pod = pod
        self.kube = kube
        self.network = network
        self.images = images or {}
        # Mount points only: each container mounts its own tmpfs on them, in its own mount
        # namespace (its root, and the upper layers of its system directories).
        self.rootfs = state_dir / "rootfs"
        self.layers = state_dir / "layers"
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.netns = ""
        self.ip = ""
        self.started = datetime.now(UTC)
        self.containers = [Container(c["name"], c) for c in pod["spec"]["containers"]]
        self.phase = "Pending"
        self.message = ""
        self._reported = ""
        self._announced_ready = False
        self._task: asyncio.Task[None] | None = None
        self._published: dict[str, dict[str, tuple[bytes, int]]] | None = None
        """The files of each ConfigMap and Secret volume as last written (None until the
        volumes are)."""
        self._stale = False
        self._refresher: asyncio.Task[None] | None = None
        self.on_change: Callable[[], None] | None = None  # called when readiness changes
        self._exited = asyncio.Event()
        """A container exited: supervision looks now, not at its next tick (a dead
        sandbox is reported, and so replaced, within milliseconds)."""
        self._exit_waits: set[asyncio.Task[int]] = set()

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(c.ready for c in self.containers)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    async def _run(self) -> None:
        try:
            self.netns, self.ip = await asyncio.to_thread(
                self.network.add, self.uid.replace("-", "")[:16]
            )
            specs = await self._prepare()
            if self._stale:  # a source changed while the volumes were being written
                self.refresh_soon()
            for container, container_spec in zip(self.containers, specs, strict=True):
                await self._spawn(container, container_spec)
            self.phase = "Running"
            await self._report()
            await self._supervise(specs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a pod that cannot run is reported, never crashes the runner
            log.exception("pod %s/%s failed", self.namespace, self.name)
            self.phase, self.message = "Failed", str(exc)
            await self._report()

    async def _prepare(self) -> list[Path]:
        """Wait for the ConfigMaps and Secrets the pod needs (as a kubelet does, reporting
        why), then write its volumes and one start-up spec per container."""
        while True:
            try:
                configmaps, secrets = await self._sources()
                env = [
                    spec.container_env(
                        self.pod,
                        c.definition,
                        pod_ip=self.ip,
                        configmaps=configmaps,
                        secrets={
                            name: {k: v.decode(errors="replace") for k, v in data.items()}
                            for name, data in secrets.items()
                        },
                    )
                    for c in self.containers
                ]
                volumes = spec.volumes(
                    self.pod, pod_ip=self.ip, configmaps=configmaps, secrets=secrets
                )
                break
            except spec.MissingSource as exc:
                for container in self.containers:
                    container.reason = "CreateContainerConfigError"
                self.message = str(exc)
                await self._report()
                await asyncio.sleep(2)
        self.message = ""
        return await asyncio.to_thread(self._write, volumes, env)

    async def _sources(self) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, bytes]]]:
        names: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set()}
        for volume in self.pod["spec"].get("volumes") or []:
            if "configMap" in volume:
                names["ConfigMap"].add(volume["configMap"]["name"])
            if "secret" in volume:
                names["Secret"].add(volume["secret"]["secretName"])
            names["Secret"].update(_projected_secrets(volume))
        for container in self.pod["spec"]["containers"]:
            for var in container.get("env") or []:
                source = var.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    names["ConfigMap"].add(source["configMapKeyRef"]["name"])
                if "secretKeyRef" in source:
                    names["Secret"].add(source["secretKeyRef"]["name"])
        configmaps: dict[str, dict[str, str]] = {}
        secrets: dict[str, dict[str, bytes]] = {}
        for name in names["ConfigMap"]:
            found = await self.kube.find("v1", "ConfigMap", self.namespace, name)
            if found is not None:
                configmaps[name] = found.get("data") or {}
        for name in names["Secret"]:
            found = await self.kube.find("v1", "Secret", self.namespace, name)
            if found is not None:
                secrets[name] = {
                    k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()
                }
        return configmaps, secrets

    def _write(self, volumes: list[spec.VolumeFiles], envs: list[dict[str, str]]) -> list[Path]:
        """The pod's files, in a directory only root may enter: containers see their own
        volumes and HOME bind-mounted into their root, never this directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        paths = {volume.name: self._write_volume(volume) for volume in volumes}
        self._published = {v.name: v.files for v in volumes if v.source is not None}
        for mount_point in (self.rootfs, self.layers):
            mount_point.mkdir(mode=0o700, exist_ok=True)
        specs = []
        for container, env in zip(self.containers, envs, strict=True):
            definition = container.definition
            uid, gid = spec.container_uid(self.pod, definition)
            home_source = self.dir / "home" / container.name
            home_source.mkdir(parents=True, exist_ok=True)
            os.chown(home_source, uid, gid)
            env.setdefault("HOME", f"/home/{container.name}")
            python = self.images.get(definition.get("image", ""), sys.executable)
            if python == sys.executable and os.environ.get("PYTHONPATH"):
                # The runner's own Paddock (a worktree's checkout on PYTHONPATH), as images
                # ship the Paddock they were built with.
                env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
            context = definition.get("securityContext") or {}
            container_spec = {
                "argv": spec.container_argv(definition, env, python),
                "env": env,
                "uid": uid,
                "gid": gid,
                "groups": spec.supplementary_groups(self.pod),
                "workdir": definition.get("workingDir") or "/",
                "root": str(self.rootfs),
                "layers": str(self.layers),
                "read_only_root": bool(context.get("readOnlyRootFilesystem")),
                "home": env["HOME"],
                "home_source": str(home_source),
                "program_paths": program_paths(python),
                "no_new_privs": context.get("allowPrivilegeEscalation") is False,
                "mounts": [
                    {
                        "source": str(paths[m["name"]]),
                        "target": m["mountPath"],
                        "read_only": bool(m.get("readOnly")),
                    }
                    for m in definition.get("volumeMounts") or []
                ],
            }
            path = self.dir / f"{container.name}.json"
            path.write_text(json.dumps(container_spec))
            path.chmod(0o600)
            specs.append(path)
        return specs

    def _write_volume(self, volume: spec.VolumeFiles) -> Path:
        root = self.dir / "volumes" / volume.name
        root.mkdir(parents=True, exist_ok=True)
        if volume.source is not None:
            publish(root, volume)
        else:
            _write_files(root, volume)
        os.chown(root, volume.uid, volume.gid)
        root.chmod(volume.dir_mode)
        return root

    def uses(self, kind: str, name: str) -> bool:
        """Whether a volume of the pod shows the ConfigMap or Secret ``name``."""
        for volume in self.pod["spec"].get("volumes") or []:
            if kind == "ConfigMap" and (volume.get("configMap") or {}).get("name") == name:
                return True
            if kind == "Secret" and (volume.get("secret") or {}).get("secretName") == name:
                return True
            if kind == "Secret" and name in _projected_secrets(volume):
                return True
        return False

    def refresh_soon(self) -> None:
        """Bring the ConfigMap and Secret volumes up to date with the apiserver, in the
        background (changes that arrive meanwhile are taken by the same refresh)."""
        self._stale = True
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(
                self._refresh(), name=f"volumes of {self.namespace}/{self.name}"
            )

    async def _refresh(self) -> None:
        while self._stale:
            self._stale = False
            if self._published is None:
                self._stale = True  # the pod's start refreshes once its volumes are written
                return
            try:
                configmaps, secrets = await self._sources()
                volumes = spec.volumes(
                    self.pod, pod_ip=self.ip, configmaps=configmaps, secrets=secrets
                )
            except spec.MissingSource as exc:
                # As a kubelet: a source that is gone leaves the files it last had.
                log.info("%s/%s: volumes not refreshed: %s", self.namespace, self.name, exc)
                continue
            except ApiError as exc:
                log.warning("%s/%s: volumes not refreshed: %s", self.namespace, self.name, exc)
                continue
            published = self._published
            changed = [
                v for v in volumes if v.source is not None and published.get(v.name) != v.files
            ]
            for volume in changed:
                await asyncio.to_thread(self._write_volume, volume)
                published[volume.name] = volume.files
                log.info("%s/%s: volume %s refreshed", self.namespace, self.name, volume.name)

    async def _spawn(self, container: Container, container_spec: Path) -> None:
        log_path = self.dir / f"{container.name}.log"
        with log_path.open("ab") as out:
            container.log_offset = out.tell()
            # A PID namespace per container, as a container runtime gives: the program is
            # PID 1 there and sees no other pod's processes (nor their /proc/PID/root).
            container.process = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.netns,
                "unshare", "--pid", "--kill-child",
                sys.executable, "-m", "paddock.runner.container", str(container_spec),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        container.state, container.since, container.ready = "running", datetime.now(UTC), False
        container.reason, container.message = "", ""
        exit_wait = asyncio.create_task(container.process.wait())
        self._exit_waits.add(exit_wait)
        exit_wait.add_done_callback(self._on_exit)
        log.info(
            "%s/%s: started %s (pid %d)",
            self.namespace,
            self.name,
            container.name,
            container.process.pid,
        )

    async def _supervise(self, specs: list[Path]) -> None:
        restart_policy = self.pod["spec"].get("restartPolicy", "Always")
        loop = asyncio.get_running_loop()
        while True:
            for container, container_spec in zip(self.containers, specs, strict=True):
                process = container.process
                if container.state == "running" and process and process.returncode is not None:
                    self._ended(container, process.returncode)
                    if restart_policy == "Always" or (
                        restart_policy == "OnFailure" and process.returncode
                    ):
                        # As a kubelet: CrashLoopBackOff, the previous run in lastState.
                        backoff = min(2.0**container.restarts, MAX_BACKOFF_SECONDS)
                        container.restart_at = loop.time() + backoff
                        container.last = {
                            "exit_code": container.exit_code,
                            "started": container.since,
                            "finished": datetime.now(UTC),
                            "message": container.message,
                        }
                        container.state, container.reason = "waiting", "CrashLoopBackOff"
                        container.message = (
                            f"back-off {backoff:g}s restarting failed container="
                            f"{container.name} pod={self.name}"
                        )
                if (
                    container.state == "waiting"
                    and container.restart_at
                    and loop.time() >= container.restart_at
                ):
                    container.restarts += 1
                    container.restart_at = 0.0
                    await self._spawn(container, container_spec)
                if container.state == "running" and not container.ready:
                    container.ready = await self._probe(container)
            if all(c.state == "terminated" and not c.restart_at for c in self.containers):
                self.phase = (
                    "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
                )
                await self._report()
                return
            await self._report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), SUPERVISE_SECONDS)
            self._exited.clear()

    def _on_exit(self, task: asyncio.Task[int]) -> None:
        self._exit_waits.discard(task)
        self._exited.set()

    def _ended(self, container: Container, code: int) -> None:
        container.state, container.exit_code, container.ready = "terminated", code, False
        container.since = datetime.now(UTC)
        container.message = ""
        if code and container.definition.get("terminationMessagePolicy") == (
            "FallbackToLogsOnError"
        ):
            container.message = _log_tail(self.dir / f"{container.name}.log", container.log_offset)
        log.info("%s/%s: %s exited with %d", self.namespace, self.name, container.name, code)

    async def _probe(self, container: Container) -> bool:
        probe = spec.probe_of(container.definition)
        if probe is None:
            return True
        kind, port, path = probe
        try:
            if kind == "tcpSocket":
                await asyncio.to_thread(socket.create_connection((self.ip, port), timeout=1).close)
                return True
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"http://{self.ip}:{port}{path}")).status_code < 400
        except (OSError, httpx.HTTPError):
            return False

    async def _report(self) -> None:
        """Patch the pod's status when what it says changed."""
        status = spec.pod_status(
            self.pod,
            pod_ip=self.ip,
            started=self.started,
            containers={c.name: c.seen() for c in self.containers},
            phase=self.phase,
            message=self.message,
        )
        summary = json.dumps(
            [self.phase, self.ip, self.message, [c.seen() for c in self.containers]], default=str
        )
        if summary == self._reported:
            return
        try:
            await self.kube.patch(
                "v1", "Pod", self.namespace, self.name, {"status": status}, subresource="status"
            )
        except NotFound:
            return
        self._reported = summary
        if self.on_change is not None and self._announced_ready != self.ready:
            self._announced_ready = self.ready
            self.on_change()

    async def stop(self, most_grace: float | None = None) -> None:
        """Stop the containers (SIGTERM, then SIGKILL after the grace period, at most
        ``most_grace``) and remove the namespace, whatever still runs in it, and the
        pod's files."""
        for own in (self._task, self._refresher):
            if own is not None:
                own.cancel()
                await asyncio.gather(own, return_exceptions=True)
        for exit_wait in list(self._exit_waits):
            exit_wait.cancel()
        grace = self.pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        if most_grace is not None:
            grace = min(grace, most_grace)
        running = [c.process for c in self.containers if c.process and c.process.returncode is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        if running:
            _, pending = await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in running], timeout=grace
            )
            for process in running:
                _signal_group(process.pid, signal.SIGKILL)
            for task in pending:
                await task
        if self.netns:
            await asyncio.to_thread(self.network.remove, self.netns, self.ip)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
        log.info("%s/%s: stopped", self.namespace, self.name)


def _projected_secrets(volume: dict[str, Any]) -> set[str]:
    """The Secrets a projected volume shows."""
    sources = (volume.get("projected") or {}).get("sources") or []
    return {s["secret"]["name"] for s in sources if "secret" in s}


def publish(root: Path, volume: spec.VolumeFiles) -> None:
    """Write ``volume``'s files as a kubelet writes a ConfigMap or Secret volume: into a new
    timestamped directory, then one rename swaps the ``..data`` symlink to it, so a reader
    sees the old files or the new ones, never a mix (the credential proxy watches its config
    and Secrets this way). Each top-level name is a symlink through ``..data``."""
    version = root / f"..{datetime.now(UTC):%Y_%m_%d_%H_%M_%S.%f}"
    version.mkdir()
    _write_files(version, volume)
    for directory in [version, *(p for p in version.rglob("*") if p.is_dir())]:
        os.chown(directory, volume.uid, volume.gid)
        directory.chmod(volume.dir_mode)
    data = root / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    staging = root / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(version.name)
    os.replace(staging, data)
    names = {Path(relative).parts[0] for relative in volume.files}
    for name in names:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    for entry in root.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in names:
            entry.unlink()
    if old is not None:
        shutil.rmtree(root / old, ignore_errors=True)


def _write_files(directory: Path, volume: spec.VolumeFiles) -> None:
    for relative, (content, mode) in volume.files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chown(target, volume.uid, volume.gid)
        target.chmod(mode)


def _log_tail(path: Path, offset: int) -> str:
    """The end of one run's output, as a kubelet keeps it for a termination message."""
    try:
        with path.open("rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(offset, size - TERMINATION_LOG_BYTES))
            return log_file.read().decode(errors="replace").strip()
    except OSError:
        return ""


@functools.cache
def program_paths(python: str) -> list[str]:
    """What a container running ``python`` needs of the host besides the system
    directories: the interpreter's prefixes and every `sys.path` entry (the venv, an
    editable checkout's source root), shortest first so that parents are mounted first."""
    # Asked of the interpreter itself (with -c, no working directory joins sys.path).
    shown = subprocess.run(
        [python, "-c", "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(shown.stdout)
    paths = {str(Path(p).resolve()) for p in found if p and Path(p).is_dir()}
    paths |= {os.path.abspath(p) for p in found if p and Path(p).is_dir()}
    return sorted(paths, key=lambda p: (p.count("/"), p))


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)
