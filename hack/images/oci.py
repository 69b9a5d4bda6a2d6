"""Writes and reads OCI image archives: layers, config, manifest, index.json, in one tar.

Why a small script and not a tool from Debian: umoci and skopeo are there (0.4.7 and 1.9.3),
but the layers are made here anyway (from mmdebstrap's root filesystem and pip's output), and
what is left is hashing, two JSON documents and a tar, written deterministically (sorted
entries, fixed times, gzip without a timestamp) so the same root filesystem gives the same
digests. umoci stamps history and config with the build time, and its layout still needs
skopeo to become an archive with the name containerd's importer reads. The archive here is
both an OCI image layout (index.json with `org.opencontainers.image.ref.name` and containerd's
`io.containerd.image.name`) and a `docker save` archive (manifest.json with RepoTags), like
the archives Docker 25+ writes: `ctr images import`, `docker load` and `kind load
image-archive` all take it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class Layer:
    path: Path  # the gzipped layer tar
    digest: str  # sha256:... of the gzipped tar
    diff_id: str  # sha256:... of the uncompressed tar
    size: int

    def to_json(self) -> str:
        return json.dumps({**vars(self), "path": str(self.path)})

    @classmethod
    def from_json(cls, text: str) -> Layer:
        data = json.loads(text)
        return cls(**{**data, "path": Path(data["path"])})


class _Hashing(io.RawIOBase):
    """A writable stream that hashes and counts what goes through it to the file below."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.out.write(view)
        self.size += len(view)
        return len(view)


def tar_directory(root: Path, source_date_epoch: int, excludes: tuple[str, ...] = ()) -> list[str]:
    """The GNU tar command line that writes root as a reproducible layer tar to stdout."""
    return [
        "tar",
        "--create",
        "--file=-",
        f"--directory={root}",
        "--sort=name",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        f"--mtime=@{source_date_epoch}",
        "--clamp-mtime",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=security.capability",
        *[f"--exclude=./{pattern}" for pattern in excludes],
        ".",
    ]


def write_layer(tar_cmd: list[str], blobs: Path) -> Layer:
    """Run tar_cmd, gzip its output into blobs/<digest>, and return the layer's digests."""
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / ".layer.tmp"
    diff = hashlib.sha256()
    with tmp.open("wb") as raw:
        hashing = _Hashing(raw)
        with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=6, mtime=0) as gz:
            proc = subprocess.Popen(tar_cmd, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                diff.update(chunk)
                gz.write(chunk)
            if proc.wait() != 0:
                raise subprocess.CalledProcessError(proc.returncode, tar_cmd)
    digest = "sha256:" + hashing.sha.hexdigest()
    path = blobs / digest.removeprefix("sha256:")
    tmp.rename(path)
    return Layer(path=path, digest=digest, diff_id="sha256:" + diff.hexdigest(), size=hashing.size)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_archive(
    out: Path,
    *,
    repository: str,
    tag: str,
    layers: list[Layer],
    config: dict[str, Any],
    history: list[dict[str, Any]],
    created: str,
    labels: dict[str, str],
    source_date_epoch: int,
) -> str:
    """Write the image archive at out; return the manifest digest."""
    image_config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {**config, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    config_digest, config_bytes = _blob(_canonical(image_config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_digest, manifest_bytes = _blob(_canonical(manifest))
    # A short name means docker.io/<name> to containerd and the kubelet alike.
    first = repository.split("/")[0]
    has_domain = "/" in repository and ("." in first or ":" in first or first == "localhost")
    full = repository if has_domain else "docker.io/" + repository
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {REF_NAME: tag, CONTAINERD_NAME: f"{full}:{tag}"},
            }
        ],
    }
    docker_manifest = [
        {
            "Config": "blobs/sha256/" + config_digest.removeprefix("sha256:"),
            "RepoTags": [f"{repository}:{tag}"],
            "Layers": ["blobs/sha256/" + layer.digest.removeprefix("sha256:") for layer in layers],
        }
    ]
    small: dict[str, bytes] = {
        "oci-layout": _canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": _canonical(index),
        "manifest.json": _canonical(docker_manifest),
        "blobs/sha256/" + config_digest.removeprefix("sha256:"): config_bytes,
        "blobs/sha256/" + manifest_digest.removeprefix("sha256:"): manifest_bytes,
    }
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:

        def entry(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.mtime = size, kind, source_date_epoch
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            return info

        tar.addfile(entry("blobs", 0, tarfile.DIRTYPE))
        tar.addfile(entry("blobs/sha256", 0, tarfile.DIRTYPE))
        files: list[tuple[str, bytes | Path]] = [*small.items()]
        files += [
            ("blobs/sha256/" + layer.digest.removeprefix("sha256:"), layer.path) for layer in layers
        ]
        for name, content in sorted(files, key=lambda item: item[0]):
            if isinstance(content, Path):
                with content.open("rb") as f:
                    tar.addfile(entry(name, content.stat().st_size), f)
            else:
                tar.addfile(entry(name, len(content)), io.BytesIO(content))
    tmp.rename(out)
    return manifest_digest


# Reading, for the tests and for unpacking into a runc bundle.


@dataclass(frozen=True)
class Image:
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    docker_manifest: list[dict[str, Any]]


def read_archive(path: Path) -> Image:
    with tarfile.open(path) as tar:

        def load(name: str) -> Any:
            f = tar.extractfile(name)
            assert f is not None, name
            return json.load(f)

        index = load("index.json")
        manifest = load("blobs/sha256/" + index["manifests"][0]["digest"].removeprefix("sha256:"))
        config = load("blobs/sha256/" + manifest["config"]["digest"].removeprefix("sha256:"))
        return Image(index, manifest, config, load("manifest.json"))


def unpack(path: Path, rootfs: Path) -> Image:
    """Apply the image's layers in order into rootfs (as root, keeping owners and modes)."""
    image = read_archive(path)
    rootfs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path) as outer:
        for layer in image.manifest["layers"]:
            member = outer.extractfile("blobs/sha256/" + layer["digest"].removeprefix("sha256:"))
            assert member is not None
            proc = subprocess.Popen(
                [
                    "tar",
                    "--extract",
                    "--gzip",
                    "--file=-",
                    f"--directory={rootfs}",
                    "--numeric-owner",
                    "--same-permissions",
                    "--xattrs",
                    "--xattrs-include=security.capability",
                ],
                stdin=subprocess.PIPE,
            )
            assert proc.stdin is not None
            shutil.copyfileobj(member, proc.stdin, 1 << 20)
            proc.stdin.close()
            if proc.wait() != 0:
                raise subprocess.CalledProcessError(proc.returncode, proc.args)
    whiteouts = list(rootfs.rglob(".wh.*"))
    if whiteouts:  # the images built here have none; a layer with deletions needs a real unpacker
        raise RuntimeError(f"whiteouts are not handled: {whiteouts[:3]}")
    return image


def read_file(path: Path, name: str) -> bytes | None:
    """The content of file `name` (e.g. etc/passwd) in the image, from the last layer that has it."""
    image = read_archive(path)
    found: bytes | None = None
    with tarfile.open(path) as outer:
        for layer in image.manifest["layers"]:
            member = outer.extractfile("blobs/sha256/" + layer["digest"].removeprefix("sha256:"))
            assert member is not None
            with tarfile.open(fileobj=member, mode="r|gz") as inner:
                for info in inner:
                    if info.name.removeprefix("./") == name and info.isfile():
                        f = inner.extractfile(info)
                        assert f is not None
                        found = f.read()
    return found
