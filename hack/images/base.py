"""The Debian base of each image: a root filesystem made by mmdebstrap from the Debian archive.

It stands in for the Dockerfiles' `FROM python:X.Y.Z-slim-<suite>`, which is Debian <suite>
plus CPython X.Y with ca-certificates, netbase and tzdata: here CPython is Debian's python3 of
the same suite (trixie's is 3.13). The Dockerfile's own steps that touch only the base (apt
packages, users, directories, removed files) are applied here too, so the base is rebuilt only
when they or this file change, and a change to the sources rebuilds only the top layer.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dockerfile import ImageSpec

MIRROR = os.environ.get("PADDOCK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "PADDOCK_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# What python:X.Y-slim adds to debian:slim besides CPython itself.
SLIM_PACKAGES = ["ca-certificates", "netbase", "tzdata"]
# The python image has pip, venv and a `python` command in the system Python; the sandbox keeps
# them (the model's `pip install` and `python` work), the paddock image removes pip.
SANDBOX_PYTHON_PACKAGES = ["python3-pip", "python3-venv", "python-is-python3"]
# Logs and caches that differ from one build to the next and that the image does not need.
_SCRUB = [
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/*",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "etc/*-",  # passwd-, group-, shadow- backups of useradd
]


@dataclass(frozen=True)
class BaseFacts:
    """What the built base is, read from its files (recorded in the image labels)."""

    debian_version: str
    codename: str
    python_version: str


def packages(name: str, spec: ImageSpec) -> list[str]:
    extra = SANDBOX_PYTHON_PACKAGES if name == "sandbox" else []
    wanted = ["python3", *SLIM_PACKAGES, *extra, *spec.apt_packages]
    return sorted(set(wanted))


def recipe(name: str, spec: ImageSpec) -> dict[str, object]:
    """Everything the base of image `name` depends on, for the cache key."""
    return {
        "suite": spec.debian_suite,
        "mirrors": [MIRROR, SECURITY_MIRROR],
        "packages": packages(name, spec),
        "users": [vars(u) for u in spec.users],
        "dirs": [vars(d) for d in spec.dirs],
        "removed": spec.removed,
        "code": Path(__file__).read_text(),
    }


def _hooks(name: str, spec: ImageSpec) -> list[str]:
    """mmdebstrap customize hooks (shell, "$1" is the root) that apply the Dockerfile's steps."""
    hooks: list[str] = []
    for user in spec.users:
        hooks.append(f'chroot "$1" groupadd --gid {user.gid} {shlex.quote(user.group)}')
        home = "--create-home" if user.create_home else "--no-create-home"
        hooks.append(
            f'chroot "$1" useradd --uid {user.uid} --gid {user.gid} {home}'
            f" --home-dir {shlex.quote(user.home)} --shell {shlex.quote(user.shell)}"
            f" {shlex.quote(user.name)}"
        )
    for d in spec.dirs:
        hooks.append(f'install -d -o {d.uid} -g {d.gid} "$1"{shlex.quote(d.path)}')
    if name == "sandbox":
        # Like the python image's /usr/local Python: the model's `pip install` goes to ~/.local
        # (site-packages is root-owned) instead of failing on Debian's PEP 668 marker.
        hooks.append('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED')
    for path in spec.removed:
        if not path.startswith("/") or ".." in path:
            raise ValueError(f"refusing to remove {path!r}")
        # Globs stay unquoted so the shell expands them inside the root.
        hooks.append(f'rm -rf "$1"{path}')
    hooks.append('cd "$1" && rm -rf ' + " ".join(_SCRUB))
    return hooks


def build(name: str, spec: ImageSpec, rootfs: Path, source_date_epoch: int) -> None:
    """Run mmdebstrap into the directory rootfs (which must not exist)."""
    suite = spec.debian_suite
    sources = [
        f"deb {MIRROR} {suite} main",
        f"deb {MIRROR} {suite}-updates main",
        f"deb {SECURITY_MIRROR} {suite}-security main",
    ]
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        "--aptopt=APT::Install-Recommends false",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--include=" + ",".join(packages(name, spec)),
        *[f"--customize-hook={hook}" for hook in _hooks(name, spec)],
        suite,
        str(rootfs),
        *sources,
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL)
    # apt leaves its partial/ directories owned by _apt or by root, depending on whether _apt
    # could reach the build directory (and mmdebstrap's cleanup makes them again): make them
    # _apt's every time, as in Debian's own images, so equal packages give equal layers.
    passwd = (rootfs / "etc/passwd").read_text()
    apt_uid = re.search(r"^_apt:x:(\d+):", passwd, re.M)
    for partial in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        if apt_uid and (rootfs / partial).is_dir():
            os.chown(rootfs / partial, int(apt_uid[1]), 0)


def facts(rootfs: Path) -> BaseFacts:
    os_release = (rootfs / "etc/os-release").read_text()
    codename = re.search(r"^VERSION_CODENAME=(\S+)$", os_release, re.M)
    status = (rootfs / "var/lib/dpkg/status").read_text()
    python = re.search(r"^Package: python3\n(?:.+\n)*?Version: (\S+)$", status, re.M)
    if not codename or not python:
        raise RuntimeError(f"{rootfs}: cannot read the Debian codename or python3's version")
    return BaseFacts(
        debian_version=(rootfs / "etc/debian_version").read_text().strip(),
        codename=codename[1],
        python_version=python[1],
    )


def write_facts(path: Path, base: BaseFacts) -> None:
    path.write_text(json.dumps(vars(base), indent=2) + "\n")


def read_facts(path: Path) -> BaseFacts:
    return BaseFacts(**json.loads(path.read_text()))
