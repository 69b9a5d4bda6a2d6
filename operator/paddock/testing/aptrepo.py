"""A real Debian package repository on loopback (a flat repository: `Packages`, `Release` and
the `.deb` files over HTTP) serving packages built here with `dpkg-deb`, so that tests install
apt packages without the internet. Unsigned: sources name it `[trusted=yes]`."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from paddock.testing.staticserver import StaticServer


def build_deb(name: str, version: str, files: dict[str, str], depends: str = "") -> bytes:
    """A binary package ``name`` holding ``files`` (path → text; under `usr/bin/` they are
    made executable)."""
    with tempfile.TemporaryDirectory(prefix="paddock-deb-") as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        control = (
            f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
            f"Maintainer: Paddock tests <tests@paddock.invalid>\nDescription: {name} for tests\n"
        )
        if depends:
            control += f"Depends: {depends}\n"
        (root / "DEBIAN" / "control").write_text(control)
        for path, text in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            if "/bin/" in f"/{path}":
                target.chmod(0o755)
        out = Path(tmp) / "out.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
            check=True,
            capture_output=True,
        )
        return out.read_bytes()


class AptRepository(StaticServer):
    """``with AptRepository() as repo:``; `add` packages, point apt at `sources_line`.
    `requests` lists the paths asked for."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.files: dict[str, bytes] = {}
        self.stanzas: list[str] = []
        super().__init__(host)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/debian/"

    @property
    def sources_line(self) -> str:
        """A one-line sources entry for this (unsigned, flat) repository."""
        return f"deb [trusted=yes] {self.url} ./"

    def add(self, name: str, version: str, files: dict[str, str], depends: str = "") -> None:
        data = build_deb(name, version, files, depends)
        filename = f"{name}_{version}_all.deb"
        self.files[filename] = data
        control = subprocess.run(
            ["dpkg-deb", "--field", "-", "Package", "Version", "Architecture", "Maintainer",
             "Description", "Depends"],
            input=data, check=True, capture_output=True,
        ).stdout.decode()  # fmt: skip
        self.stanzas.append(
            control.rstrip("\n")
            + f"\nFilename: ./{filename}\nSize: {len(data)}\n"
            + f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )

    def _index(self) -> bytes:
        return "\n".join(self.stanzas).encode()

    def _release(self) -> bytes:
        packages = self._index()
        return (
            "Origin: paddock-tests\nLabel: paddock-tests\nSuite: ./\nCodename: ./\n"
            f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n"
        ).encode()

    def answer(self, path: str) -> tuple[int, bytes, str]:
        # Through a proxy the request line holds the absolute URL.
        path = "/" + path.split("://", 1)[-1].split("/", 1)[-1]
        name = path.split("?")[0].removeprefix("/debian/").removeprefix("./")
        if name == "Packages":
            body: bytes | None = self._index()
        elif name == "Release":
            body = self._release()
        else:
            body = self.files.get(name)
        if body is None:
            return 404, b"", "text/plain"
        return 200, body, "application/octet-stream"
