"""Helpers for the image tests: build the images (cached), read them, run them with runc."""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack" / "images"))

import oci  # noqa: E402  (hack/images/oci.py: reads and unpacks the archives)

__all__ = ["ROOT", "Bundle", "Container", "build_images", "entries", "oci", "read_text"]


def build_images() -> Path:
    """hack/build-images.sh: minutes the first time, instant while the inputs are unchanged."""
    out = subprocess.run(
        ["bash", str(ROOT / "hack" / "build-images.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _mounts() -> list[dict[str, Any]]:
    """What a container runtime mounts for a pod's container (runc's defaults, no cgroup)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"],
        },
    ]


@dataclass
class Bundle:
    """An OCI runtime bundle of an image: its root filesystem and the image's config."""

    path: Path
    image: oci.Image

    @classmethod
    def unpack(cls, archive: Path, path: Path) -> Bundle:
        return cls(path, oci.unpack(archive, path / "rootfs"))

    def spec(
        self,
        args: list[str] | None = None,
        *,
        binds: dict[str, Path] | None = None,
        readonly: bool = False,
    ) -> dict[str, Any]:
        """A runtime spec that runs the image as its config says, like a restricted pod.

        No rlimits (setting them fails on these machines), no capabilities, a network
        namespace of its own with only loopback, no ServiceAccount token or other mounts.
        """
        config = self.image.config["config"]
        uid, _, gid = config["User"].partition(":")
        if args is None:
            args = [*config.get("Entrypoint", []), *config.get("Cmd", [])]
        mounts = _mounts()
        for destination, source in (binds or {}).items():
            mounts.append(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": str(source),
                    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
                }
            )
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": int(uid), "gid": int(gid or uid)},
                "args": args,
                "env": config["Env"],
                "cwd": config.get("WorkingDir") or "/",
                "capabilities": {
                    k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
                },
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": readonly},
            "hostname": "paddock-image-test",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                "maskedPaths": [
                    "/proc/acpi",
                    "/proc/kcore",
                    "/proc/keys",
                    "/proc/latency_stats",
                    "/proc/timer_list",
                    "/proc/timer_stats",
                    "/proc/sched_debug",
                    "/proc/scsi",
                    "/sys/firmware",
                ],
                "readonlyPaths": [
                    "/proc/asound",
                    "/proc/bus",
                    "/proc/fs",
                    "/proc/irq",
                    "/proc/sys",
                    "/proc/sysrq-trigger",
                ],
            },
        }


@dataclass
class Container:
    """A container started by `runc run` (its own state directory, so nothing is shared)."""

    id: str
    state: Path
    process: subprocess.Popen[bytes]
    log: Path

    def runc(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runc", "--root", str(self.state), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def exec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run args in the container (same namespaces, user and env as its process)."""
        return self.runc("exec", self.id, *args, check=False, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_once(
    bundle: Bundle, spec: dict[str, Any], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the bundle to the end: exit code and output of the container's process."""
    (bundle.path / "config.json").write_text(json.dumps(spec))
    state = bundle.path.parent / "runc-state"
    cid = "paddock-img-" + secrets.token_hex(4)
    try:
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle.path), cid],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(
            ["runc", "--root", str(state), "delete", "--force", cid],
            capture_output=True,
            check=False,
        )


@contextmanager
def running(bundle: Bundle, spec: dict[str, Any]) -> Iterator[Container]:
    """The bundle running in the background; killed and deleted at the end."""
    (bundle.path / "config.json").write_text(json.dumps(spec))
    state = bundle.path.parent / "runc-state"
    cid = "paddock-img-" + secrets.token_hex(4)
    log = bundle.path.parent / f"{cid}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle.path), cid],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    container = Container(cid, state, process, log)
    try:
        yield container
    finally:
        container.runc("kill", cid, "KILL", check=False)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        container.runc("delete", "--force", cid, check=False)


def can_run_containers() -> str | None:
    """None if runc can start a container here, else why not (tried, not guessed)."""
    if not any((Path(d) / "runc").exists() for d in os.environ.get("PATH", "").split(":")):
        return "runc is not installed (bash hack/setup.sh installs it)"
    if os.geteuid() != 0:
        return "runc needs root here (rootless runc is not set up)"
    return None


# Small files the tests read, kept while listing the layers (one pass over each image).
READ = frozenset({"etc/passwd", "etc/group", "usr/lib/os-release", "var/lib/dpkg/status"})


@functools.lru_cache(maxsize=4)
def _scan(archive: Path) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes]]:
    image = oci.read_archive(archive)
    found: dict[str, tarfile.TarInfo] = {}
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        for layer in image.manifest["layers"]:
            blob = outer.extractfile("blobs/sha256/" + layer["digest"].removeprefix("sha256:"))
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r|gz") as inner:
                for info in inner:
                    name = info.name.removeprefix("./").rstrip("/")
                    found[name] = info
                    if name in READ and info.isfile():
                        f = inner.extractfile(info)
                        assert f is not None
                        contents[name] = f.read()
    return found, contents


def entries(archive: Path) -> dict[str, tarfile.TarInfo]:
    """Every path in the image (names without ./), as the last layer that has it leaves it."""
    return _scan(archive)[0]


def read_text(archive: Path, name: str) -> str:
    """One of the READ files of the image, following symlinks (etc/os-release)."""
    files, contents = _scan(archive)
    for _ in range(8):
        info = files.get(name)
        if info is None or not info.issym():
            break
        target = (
            info.linkname
            if info.linkname.startswith("/")
            else f"/{Path(name).parent}/{info.linkname}"
        )
        name = os.path.normpath(target).lstrip("/")
    assert name in contents, f"{name} is not in {archive} or not in READ"
    return contents[name].decode()
