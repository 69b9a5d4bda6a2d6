"""A real Python package index on loopback (PEP 503 "simple" pages over HTTP) serving wheels
built here, so that tests install packages with pip without the internet."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import zipfile

from paddock.testing.staticserver import StaticServer


def build_wheel(name: str, version: str, source: str) -> tuple[str, bytes]:
    """(file name, bytes) of a pure-Python wheel of one module ``name`` holding ``source``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": source.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: paddock-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return f"{dist}-{version}-py3-none-any.whl", buffer.getvalue()


class PackageIndex(StaticServer):
    """``with PackageIndex(host) as index:``; `add` wheels, point pip at `url`. `requests`
    lists the paths asked for."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.projects: dict[str, list[str]] = {}
        super().__init__(host)

    @property
    def url(self) -> str:
        """The index URL pip takes (`--index-url`)."""
        return f"http://{self.host}:{self.port}/simple/"

    def add(self, name: str, version: str, source: str) -> None:
        filename, data = build_wheel(name, version, source)
        self.files[filename] = data
        self.projects.setdefault(_normalize(name), []).append(filename)

    def answer(self, path: str) -> tuple[int, bytes, str]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "files" and parts[1] in self.files:
            return 200, self.files[parts[1]], "application/octet-stream"
        if len(parts) == 2 and parts[0] == "simple" and _normalize(parts[1]) in self.projects:
            links = "".join(
                f'<a href="/files/{html.escape(f)}#sha256='
                f'{hashlib.sha256(self.files[f]).hexdigest()}">{html.escape(f)}</a>\n'
                for f in self.projects[_normalize(parts[1])]
            )
            return 200, f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(), "text/html"
        return 404, b"not found", "text/plain"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503
