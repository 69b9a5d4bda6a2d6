"""`python -m paddock.runner.container SPEC`: become one container of a local pod, then exec
its program.

The runner starts this as root inside the pod's network namespace (`ip netns exec`, which
also gives it a private mount namespace). It bind-mounts the pod's volumes at their mount
paths, hides root's home except the Python installation the program needs, drops to the
container's uid/gid, and replaces itself with the container's command, so the process the
runner watches is the container's program itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _expose_python(python_root: str | None) -> None:
    """Root's home is private (mode 0700), and a Python installed under it (pyenv) cannot be
    run by another uid. Over /root goes an empty tmpfs holding only that installation."""
    if not python_root or not python_root.startswith("/root/"):
        return
    stage = Path("/run/paddock-python-stage")
    stage.mkdir(exist_ok=True)
    _mount("--bind", python_root, str(stage))
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/root")
    Path(python_root).mkdir(parents=True)
    _mount("--bind", str(stage), python_root)
    subprocess.run(["umount", str(stage)], check=True)


def become(spec: dict[str, Any]) -> None:
    _expose_python(spec.get("python_root"))
    for mount in spec["mounts"]:
        target = Path(mount["target"])
        # The mount point is created on the host's filesystem (empty, root's); the
        # content is only visible inside this container's mount namespace.
        target.mkdir(parents=True, exist_ok=True)
        _mount("--bind", mount["source"], str(target))
        if mount["read_only"]:
            _mount("-o", "remount,bind,ro", str(target))
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.chdir(spec["workdir"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        become(spec)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"paddock-runner: cannot start the container: {exc}", file=sys.stderr, flush=True)
        sys.exit(128)


if __name__ == "__main__":
    main()
