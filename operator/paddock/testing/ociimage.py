"""Small OCI image archives built without Docker or a registry, for the one-node cluster.

`write_oci_archive` lays out an OCI image (one uncompressed layer, config, manifest, index.json) as a
tar that `ctr images import` accepts. Two images are built from files on this machine:

- a busybox image from Debian's busybox-static (`/bin/busybox`, applets as symlinks, an
  `/etc/passwd` with `nobody` = 65534), the test workload;
- a pause image from Kubernetes' own `build/pause/linux/pause.c`, compiled statically by
  hack/build-node.sh, the pod sandbox that containerd's CRI starts for every pod.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX_IMAGE = "paddock.local/busybox:test"
PAUSE_IMAGE = "paddock.local/pause:3.10.1"
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass
class ImageSpec:
    """What goes into an image: files (path in the image -> bytes, mode), symlinks, config."""

    name: str
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    directories: dict[str, int] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"])
    user: str = ""


def _layer(spec: ImageSpec) -> bytes:
    """An uncompressed, reproducible tar of the image's filesystem."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parents: set[str] = set()
        paths = list(spec.files) + list(spec.symlinks) + list(spec.directories)
        for path in sorted(paths):
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                parents.add("/".join(parts[:i]))
        for directory in sorted(parents | {d.strip("/") for d in spec.directories}):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = spec.directories.get("/" + directory, 0o755)
            tar.addfile(info)
        for path, (data, mode) in sorted(spec.files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(spec.symlinks.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.removeprefix("sha256:"))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return digest


def write_oci_archive(spec: ImageSpec, archive: Path) -> Path:
    """Write ``spec`` as an OCI image-layout tar at ``archive``."""
    # Uncompressed: the archive only travels to the local containerd, and gzip of a 50 MB
    # binary costs seconds of each node start.
    layer = _layer(spec)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": spec.env,
            "Entrypoint": spec.entrypoint or None,
            "Cmd": spec.cmd or None,
            "User": spec.user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        "history": [{"created_by": "paddock.testing.ociimage"}],
    }
    tag = spec.name.rpartition(":")[2]
    with tarfile.open(archive, "w") as tar:
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = _blob(tar, config_bytes)
        layer_digest = _blob(tar, layer)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            },
            sort_keys=True,
        ).encode()
        manifest_digest = _blob(tar, manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": spec.name,
                        "org.opencontainers.image.ref.name": tag or "latest",
                    },
                }
            ],
        }
        for name, payload in (
            ("oci-layout", {"imageLayoutVersion": "1.0.0"}),
            ("index.json", index),
        ):
            data = json.dumps(payload).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def busybox_image(busybox: Path = Path("/bin/busybox")) -> ImageSpec:
    """A busybox image (Debian's busybox-static): `sh`, `id`, `wget`, `nc`, `httpd`, ...."""
    listing = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True)
    symlinks = {f"/bin/{applet}": "busybox" for applet in listing.stdout.split() if applet}
    symlinks.pop("/bin/busybox", None)
    return ImageSpec(
        name=BUSYBOX_IMAGE,
        files={
            "/bin/busybox": (busybox.read_bytes(), 0o755),
            "/etc/passwd": (_PASSWD.encode(), 0o644),
            "/etc/group": (_GROUP.encode(), 0o644),
        },
        symlinks=symlinks,
        directories={"/tmp": 0o1777, "/www": 0o755, "/proc": 0o555, "/sys": 0o555},
        cmd=["/bin/sh"],
    )


def pause_image(pause: Path) -> ImageSpec:
    """The pod sandbox image: Kubernetes' pause binary, run as 65535 like upstream's."""
    return ImageSpec(
        name=PAUSE_IMAGE,
        files={"/pause": (pause.read_bytes(), 0o755)},
        entrypoint=["/pause"],
        user="65535:65535",
        env=[],
    )


REDIS_IMAGE = "paddock.local/redis:7.0"
_REDIS_PASSWD = _PASSWD + "redis:x:999:999:redis:/data:/bin/false\n"
_REDIS_GROUP = _GROUP + "redis:x:999:\n"


def _shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (ldd), the dynamic loader included."""
    listing = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True)
    return [Path(p) for p in re.findall(r"(/\S+\.so[.\d]*)\s", listing.stdout + " ")]


def redis_image(bindir: Path = Path("/usr/bin")) -> ImageSpec:
    """A Redis image from Debian's redis-server and redis-cli on this machine, with exactly
    the shared libraries they load: what the chart's bundled Redis runs (`redis-server
    /etc/redis/redis.conf`, readiness `redis-cli ping`), as uid 999 like the official image."""
    files: dict[str, tuple[bytes, int]] = {
        "/etc/passwd": (_REDIS_PASSWD.encode(), 0o644),
        "/etc/group": (_REDIS_GROUP.encode(), 0o644),
    }
    for name in ("redis-server", "redis-cli"):
        binary = bindir / name
        files[f"/usr/bin/{name}"] = (binary.read_bytes(), 0o755)
        for library in _shared_libraries(binary):
            files[str(library)] = (library.resolve().read_bytes(), 0o755)
    return ImageSpec(
        name=REDIS_IMAGE,
        files=files,
        directories={"/data": 0o777, "/tmp": 0o1777, "/proc": 0o555, "/sys": 0o555},
        cmd=["redis-server"],
        user="999:999",
    )
