"""What can be checked of the images without Docker: pinned bases, multi-stage builds,
non-root users, and entrypoints that exist and take the arguments the images give them."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.chart.support import ROOT

IMAGES = ROOT / "images"
TOKEN_FILE = "/var/run/paddock/sandbox/token"
# An exact version: 3.13.7-slim-trixie, 8.2.2-alpine; never latest or a bare major/minor.
PINNED_TAG = re.compile(r"^\d+\.\d+\.\d+(-[a-z0-9.-]+)?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [arg for kw, arg in self.instructions if kw == keyword]
        return values[-1] if values else None


def parse(dockerfile: Path) -> list[Stage]:
    """Stages of a Dockerfile, each with its instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = argument.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            stages[-1].instructions.append((keyword, argument.strip()))
    return stages


DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_pinned_and_the_build_is_multi_stage(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert len(stages) >= 2, "build in one stage, run in another"
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        tag = stage.base.partition(":")[2].split("@")[0]
        assert PINNED_TAG.match(tag), f"{stage.base} is not pinned to an exact version"
    text = dockerfile.read_text()
    assert not re.search(r"^\s*ADD\s+https?://", text, re.M), "no unverified downloads"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_runtime_stage_is_non_root(dockerfile: Path) -> None:
    runtime = parse(dockerfile)[-1]
    user = runtime.last("USER")
    assert user is not None, "the runtime stage sets no USER"
    uid, _, gid = user.partition(":")
    # Numeric, so that runAsNonRoot can verify it without a passwd lookup.
    assert re.fullmatch(r"[1-9][0-9]*", uid), user
    assert re.fullmatch(r"([1-9][0-9]*)?", gid), user


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_build_context_holds_what_the_image_copies(dockerfile: Path) -> None:
    ignore = (dockerfile.parent / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in parse(dockerfile):
        for keyword, argument in stage.instructions:
            if keyword != "COPY" or argument.startswith("--from"):
                continue
            *sources, _ = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in kept, f"{source} is excluded from the context"


@pytest.mark.parametrize("program", ["operator", "harness", "proxy", "gateway", "sandbox"])
def test_every_entrypoint_module_exists(program: str) -> None:
    """`python -m paddock.<program>` needs a `__main__` module in the package."""
    assert importlib.util.find_spec(f"paddock.{program}.__main__") is not None


def test_the_paddock_image_runs_the_operator_by_default() -> None:
    runtime = parse(IMAGES / "paddock" / "Dockerfile")[-1]
    entrypoint = json.loads(runtime.last("ENTRYPOINT") or "[]")
    cmd = json.loads(runtime.last("CMD") or "[]")
    assert entrypoint + cmd == ["python", "-m", "paddock.operator"]
    assert runtime.last("USER") == "10001:10001"


def test_the_sandbox_entrypoint_serves_with_the_operator_token_file(tmp_path: Path) -> None:
    runtime = parse(IMAGES / "sandbox" / "Dockerfile")[-1]
    entrypoint = json.loads(runtime.last("ENTRYPOINT") or "[]")
    assert entrypoint[:3] == ["python3", "-m", "paddock.sandbox"]
    args = entrypoint[3:]
    assert args[args.index("--token-file") + 1] == TOKEN_FILE
    assert args[args.index("--port") + 1] == "8080"
    assert runtime.last("EXPOSE") == "8080"
    assert runtime.last("WORKDIR") == args[args.index("--workdir") + 1] == "/workspace"
    assert runtime.last("USER") == "10001:10001"
    # The real server accepts these arguments and reads the token from that path: here the
    # file is missing, so it stops naming it (exit 2) rather than rejecting an argument.
    result = subprocess.run(
        [sys.executable, "-m", "paddock.sandbox", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"cannot read the token file: [Errno 2] No such file or directory: '{TOKEN_FILE}'" in (
        result.stderr
    )


def test_the_sandbox_image_has_the_tools_agents_expect() -> None:
    text = re.sub(r"\\\n", " ", (IMAGES / "sandbox" / "Dockerfile").read_text())
    install = re.search(r"apt-get install ([^&]+)", text)
    assert install is not None
    packages = set(install.group(1).split())
    assert {"bash", "git", "curl", "ca-certificates", "ripgrep", "jq"} <= packages
    assert "--no-install-recommends" in packages
    assert "install -d -o 10001 -g 10001 /workspace" in text
    assert "HOME=/home/sandbox" in text
