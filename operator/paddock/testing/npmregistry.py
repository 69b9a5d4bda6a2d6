"""A real npm registry on loopback (packuments and tarballs over HTTP) serving packages built
here, so that tests install Node packages with npm without the internet."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from typing import Any

from paddock.testing.staticserver import StaticServer


def build_tarball(name: str, version: str, files: dict[str, str], bin: dict[str, str]) -> bytes:
    """A package tarball (`package/…`, as `npm pack` makes) with ``files`` and a package.json."""
    manifest = {"name": name, "version": version, "main": "index.js", "bin": bin}
    contents = {"package.json": json.dumps(manifest), **files}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in contents.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{path}")
            info.size, info.mode = len(data), 0o755 if path in bin.values() else 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class NpmRegistry(StaticServer):
    """``with NpmRegistry() as registry:``; `add` packages, point npm at `url`. `requests`
    lists the paths asked for."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.packuments: dict[str, dict[str, Any]] = {}
        self.tarballs: dict[str, bytes] = {}
        super().__init__(host)

    @property
    def url(self) -> str:
        """The registry URL npm takes (`--registry`)."""
        return f"http://{self.host}:{self.port}/"

    def add(
        self, name: str, version: str, files: dict[str, str], bin: dict[str, str] | None = None
    ) -> None:
        tarball = build_tarball(name, version, files, bin or {})
        path = f"/{name}/-/{name}-{version}.tgz"
        self.tarballs[path] = tarball
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
        packument = self.packuments.setdefault(
            name, {"name": name, "dist-tags": {}, "versions": {}}
        )
        packument["dist-tags"]["latest"] = version
        packument["versions"][version] = {
            "name": name,
            "version": version,
            "bin": bin or {},
            "dist": {
                "tarball": f"{self.url.rstrip('/')}{path}",
                "shasum": hashlib.sha1(tarball).hexdigest(),
                "integrity": integrity,
            },
        }

    def answer(self, path: str) -> tuple[int, bytes, str]:
        path = path.split("?")[0]
        if path in self.tarballs:
            return 200, self.tarballs[path], "application/octet-stream"
        name = path.strip("/")
        if name in self.packuments:
            return 200, json.dumps(self.packuments[name]).encode(), "application/json"
        return 404, b'{"error": "not found"}', "application/json"
