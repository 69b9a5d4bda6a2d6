"""The Dockerfiles (the definition for users with Docker) and the images built without Docker
agree: base family, users and groups, HOME, WORKDIR, ENV, USER, ENTRYPOINT/CMD, the sandbox's
apt packages, the paddock image's removed shells and pip, and the names the chart pulls.

The Dockerfile is read here on its own (not with the build's parser, hack/images/dockerfile.py),
and the image from its archive: config json, /etc/passwd, /etc/group, dpkg's status."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from tests.images.support import ROOT, entries, oci, read_text

pytestmark = pytest.mark.timeout(1800)
NAMES = ("paddock", "sandbox")


@dataclass
class FinalStage:
    """What the last stage of a Dockerfile says, read with regular expressions."""

    python_minor: str
    suite: str
    env: dict[str, str] = field(default_factory=dict)
    instructions: dict[str, str] = field(default_factory=dict)  # the last of each keyword
    runs: str = ""  # every RUN, joined

    @classmethod
    def read(cls, dockerfile: Path) -> FinalStage:
        text = re.sub(r"\\\n", " ", dockerfile.read_text())
        lines = [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
        last_from = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
        base = re.fullmatch(r"FROM python:(\d+\.\d+)\.\d+-slim-([a-z]+)", lines[last_from])
        assert base, lines[last_from]
        stage = cls(python_minor=base[1], suite=base[2])
        for line in lines[last_from + 1 :]:
            keyword, _, args = line.partition(" ")
            if keyword == "ENV":
                stage.env.update(pair.split("=", 1) for pair in shlex.split(args))
            elif keyword == "RUN":
                stage.runs += " && " + args
            else:
                stage.instructions[keyword] = args
        return stage

    def groups(self) -> dict[str, int]:
        return {m[2]: int(m[1]) for m in re.finditer(r"groupadd --gid (\d+) (\S+)", self.runs)}

    def users(self) -> list[tuple[str, int, int, str, str]]:
        """(name, uid, gid, home, shell) of each useradd."""
        out = []
        for command in re.findall(r"useradd ([^&]+)", self.runs):
            words = shlex.split(command)
            opt = {w: words[i + 1] for i, w in enumerate(words) if w.startswith("--")}
            out.append(
                (words[-1], int(opt["--uid"]), int(opt["--gid"]), opt["--home-dir"], opt["--shell"])
            )
        return out

    def apt_packages(self) -> list[str]:
        found = re.search(r"apt-get install ([^&]+)", self.runs)
        return [w for w in shlex.split(found[1]) if not w.startswith("-")] if found else []

    def removed(self) -> list[str]:
        return [
            w
            for cmd in re.findall(r"\brm ([^&]+)", self.runs)
            for w in shlex.split(cmd)
            if not w.startswith("-")
        ]


Built = dict[str, tuple[FinalStage, oci.Image, dict[str, tarfile.TarInfo]]]


@pytest.fixture(scope="module")
def built(images: Path) -> Built:
    return {
        name: (
            FinalStage.read(ROOT / "images" / name / "Dockerfile"),
            oci.read_archive(images / f"{name}.tar"),
            entries(images / f"{name}.tar"),
        )
        for name in NAMES
    }


def _installed(status: str) -> dict[str, str]:
    """Package -> Version of what dpkg's status file says is installed."""
    out = {}
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if fields.get("Status") == "install ok installed":
            out[fields["Package"]] = fields["Version"]
    return out


def _text(archive: Path, name: str) -> str:
    if name == "etc/os-release":  # a symlink to ../usr/lib/os-release
        assert entries(archive)[name].issym()
    return read_text(archive, name)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_the_dockerfiles(built: Built, name: str) -> None:
    stage, image, _ = built[name]
    config = image.config["config"]
    assert config["Entrypoint"] == json.loads(stage.instructions["ENTRYPOINT"])
    assert config.get("Cmd") == (
        json.loads(stage.instructions["CMD"]) if "CMD" in stage.instructions else None
    )
    assert config["User"] == stage.instructions["USER"]
    assert config["WorkingDir"] == stage.instructions.get("WORKDIR", "/")
    env = dict(pair.split("=", 1) for pair in config["Env"])
    assert {k: env.get(k) for k in stage.env} == stage.env  # PATH, HOME, ... as written
    assert env["LANG"] == "C.UTF-8"  # what the python:slim base sets
    exposed = stage.instructions.get("EXPOSE")
    assert sorted(config.get("ExposedPorts", {})) == ([f"{exposed}/tcp"] if exposed else [])


@pytest.mark.parametrize("name", NAMES)
def test_base_family_is_the_dockerfiles(built: Built, images: Path, name: str) -> None:
    """python:X.Y.Z-slim-<suite> is Debian <suite> + CPython X.Y; so is the image."""
    stage, image, files = built[name]
    archive = images / f"{name}.tar"
    assert f"VERSION_CODENAME={stage.suite}\n" in _text(archive, "etc/os-release")
    status = _text(archive, "var/lib/dpkg/status")
    python3 = _installed(status)["python3"]
    assert python3.startswith(stage.python_minor + "."), python3
    assert f"usr/bin/python{stage.python_minor}" in files
    assert image.config["config"]["Labels"]["org.opencontainers.image.base.name"] == (
        f"debian:{stage.suite}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_users_and_groups_are_the_dockerfiles(built: Built, images: Path, name: str) -> None:
    stage, image, files = built[name]
    archive = images / f"{name}.tar"
    passwd = _text(archive, "etc/passwd").splitlines()
    group = _text(archive, "etc/group").splitlines()
    users = stage.users()
    assert users
    for user, uid, gid, home, shell in users:
        assert f"{user}:x:{uid}:{gid}::{home}:{shell}" in passwd
    for name_, gid in stage.groups().items():
        assert f"{name_}:x:{gid}:" in group
    # USER is the uid:gid of the Dockerfile's user; HOME, where set, is that user's home.
    assert image.config["config"]["User"] == f"{users[0][1]}:{users[0][2]}"
    if "HOME" in stage.env:
        assert stage.env["HOME"] == users[0][3]
        home = files[users[0][3].lstrip("/")]
        assert (home.isdir(), home.uid, home.gid) == (True, users[0][1], users[0][2])
    workdir = stage.instructions.get("WORKDIR")
    if workdir and workdir != "/":
        info = files[workdir.lstrip("/")]
        assert (info.isdir(), info.uid, info.gid) == (True, users[0][1], users[0][2])


def test_sandbox_has_the_dockerfiles_apt_packages(built: Built, images: Path) -> None:
    stage, _, _ = built["sandbox"]
    wanted = stage.apt_packages()
    assert "git" in wanted
    assert "ripgrep" in wanted
    status = _text(images / "sandbox.tar", "var/lib/dpkg/status")
    assert sorted(set(wanted) - set(_installed(status))) == []


def test_paddock_image_has_no_shell_and_no_pip(built: Built) -> None:
    stage, _, files = built["paddock"]
    removed = stage.removed()
    assert "/bin/sh" in removed
    assert "/usr/bin/bash" in removed
    for pattern in removed:
        left = fnmatch.filter(files, pattern.lstrip("/"))
        assert left == [], pattern
    minor = stage.python_minor
    assert not [
        f for f in files if re.match(rf"opt/paddock/lib/python{minor}/site-packages/pip\b", f)
    ]
    assert not [f for f in files if re.match(r"opt/paddock/bin/pip", f)]
    assert f"opt/paddock/lib/python{minor}/site-packages/paddock/__init__.py" in files


def test_sandbox_server_is_in_the_system_python(built: Built) -> None:
    stage, _, files = built["sandbox"]
    site = f"usr/local/lib/python{stage.python_minor}/dist-packages"
    assert f"{site}/paddock/sandbox/__main__.py" in files


@pytest.mark.parametrize("name", NAMES)
def test_names_are_what_the_chart_pulls(built: Built, name: str) -> None:
    values = yaml.safe_load((ROOT / "charts/paddock/values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "charts/paddock/Chart.yaml").read_text())
    key = {"paddock": "image", "sandbox": "sandboxImage"}[name]
    repository = values[key]["repository"]
    tag = values[key]["tag"] or chart["appVersion"]
    _, image, _ = built[name]
    (manifest,) = image.index["manifests"]
    assert manifest["annotations"]["io.containerd.image.name"] == f"docker.io/{repository}:{tag}"
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == tag
    assert image.docker_manifest[0]["RepoTags"] == [f"{repository}:{tag}"]


def test_the_builds_parser_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    """A Dockerfile change the no-Docker build cannot follow fails the build, loudly."""
    sys.path.insert(0, str(ROOT / "hack" / "images"))
    import dockerfile

    original = (ROOT / "images/sandbox/Dockerfile").read_text()
    for extra in ("ADD https://example.invalid/x /x", "RUN chmod 777 /workspace", "VOLUME /data"):
        changed = tmp_path / "Dockerfile"
        changed.write_text(original + extra + "\n")
        with pytest.raises(ValueError, match="the no-Docker build does not know"):
            dockerfile.parse(changed)
    parsed = dockerfile.parse(ROOT / "images/sandbox/Dockerfile")
    stage = FinalStage.read(ROOT / "images/sandbox/Dockerfile")
    assert parsed.apt_packages == stage.apt_packages()
    assert parsed.entrypoint == json.loads(stage.instructions["ENTRYPOINT"])
