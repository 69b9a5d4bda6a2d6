"""Reads what the no-Docker image build needs from the final stage of a Paddock Dockerfile.

The Dockerfiles in images/ stay the definition for users with Docker; this module makes them
the single source of truth for the build without Docker too (hack/images/build.py) and for the
test that checks the two agree (tests/images/test_agree.py). It understands only the
instructions and commands those Dockerfiles use, and fails loudly on anything else in the
final stage, so a change to a Dockerfile cannot be silently dropped by the other build.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

# python:<major>.<minor>.<patch>-slim-<debian codename>
_FROM = re.compile(r"^python:(?P<python>\d+\.\d+)(?:\.\d+)?-slim-(?P<suite>[a-z]+)$")
# Commands inside RUN that the other build carries out itself (or that have no meaning there).
_IGNORED_COMMANDS = {"apt-get update"}


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    group: str
    home: str
    shell: str
    create_home: bool


@dataclass(frozen=True)
class Dir:
    path: str
    uid: int
    gid: int


@dataclass(frozen=True)
class ImageSpec:
    """The final stage of a Dockerfile, as far as the image's contents and config go."""

    base: str  # the FROM image, e.g. python:3.13.7-slim-trixie
    debian_suite: str  # trixie
    python_minor: str  # 3.13
    apt_packages: list[str] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    dirs: list[Dir] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # paths and globs of `rm -f` / `rm -rf`
    pip_installs: int = 0  # `pip install` of the project wheel into the system Python
    copies_venv: bool = False  # COPY --from=build /opt/paddock
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = "/"
    exposed_ports: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class _Draft(TypedDict):
    """ImageSpec's fields while the stage is read (keyword arguments of ImageSpec)."""

    base: str
    debian_suite: str
    python_minor: str
    apt_packages: list[str]
    users: list[User]
    dirs: list[Dir]
    removed: list[str]
    pip_installs: int
    copies_venv: bool
    env: dict[str, str]
    user: str
    workdir: str
    exposed_ports: list[str]
    entrypoint: list[str]
    cmd: list[str]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    if current:
        raise ValueError(f"unterminated instruction: {current!r}")
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    if not starts:
        raise ValueError("no FROM instruction")
    return instructions[starts[-1] :]


def _env(args: str) -> dict[str, str]:
    pairs = shlex.split(args)
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"ENV needs key=value pairs, got {args!r}")
        env[key] = value
    return env


def _options(words: list[str], with_value: set[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    rest: list[str] = []
    it = iter(words)
    for word in it:
        if word in with_value:
            options[word] = next(it)
        elif word.startswith("-"):
            options[word] = ""
        else:
            rest.append(word)
    return options, rest


def _run(command: str, spec: _Draft, groups: dict[str, int]) -> None:
    """Fold one command of a RUN (split at &&) into the spec; ``groups``: name → gid of the
    groups added so far."""
    words = shlex.split(command)
    if command in _IGNORED_COMMANDS:
        return
    head = words[0]
    if words[:3] == ["apt-get", "install", "-y"]:
        packages = [w for w in words[3:] if not w.startswith("-")]
        spec["apt_packages"] = [*spec["apt_packages"], *packages]
    elif head == "groupadd":
        options, rest = _options(words[1:], {"--gid"})
        groups[rest[0]] = int(options["--gid"])
    elif head == "useradd":
        options, rest = _options(words[1:], {"--uid", "--gid", "--home-dir", "--shell"})
        gid = int(options["--gid"])
        group = next((name for name, g in groups.items() if g == gid), "")
        if not group:
            raise ValueError(f"useradd with gid {gid} before its groupadd: {command!r}")
        user = User(
            name=rest[0],
            uid=int(options["--uid"]),
            gid=gid,
            group=group,
            home=options["--home-dir"],
            shell=options["--shell"],
            create_home="--create-home" in options,
        )
        spec["users"] = [*spec["users"], user]
    elif head == "install" and "-d" in words:
        options, rest = _options(words[1:], {"-o", "-g", "-m"})
        for path in rest:
            d = Dir(path=path, uid=int(options["-o"]), gid=int(options["-g"]))
            spec["dirs"] = [*spec["dirs"], d]
    elif head == "rm":
        paths = [w for w in words[1:] if not w.startswith("-")]
        spec["removed"] = [*spec["removed"], *paths]
    elif head == "pip" and words[1] == "install":
        spec["pip_installs"] += 1
    else:
        raise ValueError(f"the no-Docker build does not know this command: {command!r}")


def parse(path: Path) -> ImageSpec:
    """The final stage of the Dockerfile at path."""
    stage = _final_stage(_instructions(path.read_text()))
    groups: dict[str, int] = {}
    # base, debian_suite and python_minor come from the FROM that starts the stage.
    spec: _Draft = {
        "base": "",
        "debian_suite": "",
        "python_minor": "",
        "apt_packages": [],
        "users": [],
        "dirs": [],
        "removed": [],
        "pip_installs": 0,
        "copies_venv": False,
        "env": {},
        "exposed_ports": [],
        "workdir": "/",
        "user": "",
        "entrypoint": [],
        "cmd": [],
    }
    for keyword, args in stage:
        if keyword == "FROM":
            match = _FROM.match(args)
            if not match:
                raise ValueError(f"FROM {args!r} is not python:X.Y.Z-slim-<debian>")
            spec["base"] = args
            spec["debian_suite"] = match["suite"]
            spec["python_minor"] = match["python"]
        elif keyword == "RUN":
            for command in args.split("&&"):
                _run(command.strip(), spec, groups)
        elif keyword == "COPY":
            if args.split()[:2] == ["--from=build", "/opt/paddock"]:
                spec["copies_venv"] = True
            elif not args.startswith("--from=build /dist"):
                raise ValueError(f"unknown COPY {args!r}")
        elif keyword == "ENV":
            spec["env"] = {**spec["env"], **_env(args)}
        elif keyword == "USER":
            spec["user"] = args
        elif keyword == "WORKDIR":
            spec["workdir"] = args
        elif keyword == "EXPOSE":
            spec["exposed_ports"] = [*spec["exposed_ports"], *args.split()]
        elif keyword == "ENTRYPOINT":
            spec["entrypoint"] = json.loads(args)
        elif keyword == "CMD":
            spec["cmd"] = json.loads(args)
        else:
            raise ValueError(f"the no-Docker build does not know {keyword} {args!r}")
    return ImageSpec(**spec)


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(parse(Path(arg)).to_json())
