"""`python -m paddock.runner.container SPEC`: become one container of a local pod, then exec
its program.

The runner starts this as root inside the pod's network namespace (`ip netns exec`, which
gives it a private mount namespace) and a PID namespace of its own (`unshare --pid --fork`:
this process is PID 1 there, and the program it execs is). It builds the container's root
filesystem on a fresh tmpfs, chroots into it, drops to the container's uid/gid and replaces
itself with the program, so the process the runner watches is the program itself.

The root holds only:
- the host's system directories (`/usr`, `/etc`, the `/bin`-style links) as overlays
  whose upper layer is the container's own: they stand in for the image's, mount points
  can be made in them (`/etc/paddock/...`), and no change reaches the host;
- the Python environment the program runs with (its prefix, base prefix and `sys.path`),
  read-only, wherever the checkout lives (under `/tmp`, under a home directory of mode
  0700, in a path with spaces);
- the pod's own volumes at their mount paths, and the container's HOME;
- a `/proc` of its own PID namespace, a minimal `/dev`, and empty `/tmp` and `/run`.

Nothing else of the host is there: not the runner's state directory (other pods' volumes
and tokens), not other checkouts, not `/root`.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level host entries that stand in for an image's system files (links stay links)."""
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PR_SET_NO_NEW_PRIVS = 38


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def _bind(source: str, target: Path, *, read_only: bool, recursive: bool = False) -> None:
    if Path(source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    _mount("--rbind" if recursive else "--bind", source, str(target))
    if read_only:
        _mount("-o", "remount,bind,ro", str(target))


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _visible(path: str, shown: list[str]) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in shown)


def build_root(spec: dict[str, Any]) -> Path:
    root, layers = Path(spec["root"]), Path(spec["layers"])
    _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(root))
    _mount("-t", "tmpfs", "-o", "mode=0700", "tmpfs", str(layers))
    shown: list[str] = []
    overlays: list[Path] = []
    for name in SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            upper, work = layers / name / "upper", layers / name / "work"
            for directory in (root / name, upper, work):
                directory.mkdir(parents=True)
            options = f"lowerdir={host},upperdir={upper},workdir={work}"
            _mount("-t", "overlay", "-o", options, "overlay", str(root / name))
            overlays.append(root / name)
            shown.append(str(host))
    # `ip netns exec` bind-mounted the pod's hosts file over /etc/hosts; an overlay shows
    # the file beneath, so the pod's goes on top again.
    _bind("/etc/hosts", root / "etc" / "hosts", read_only=True)
    dev = root / "dev"
    dev.mkdir()
    _mount("-t", "tmpfs", "-o", "mode=0755,nosuid", "tmpfs", str(dev))
    for device in DEVICES:
        if Path("/dev", device).exists():
            _bind(f"/dev/{device}", dev / device, read_only=False)
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        (dev / link).symlink_to(target)
    (dev / "shm").mkdir()
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(dev / "shm"))
    (root / "proc").mkdir()
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    _bind("/sys", root / "sys", read_only=True)
    for name, mode in (("tmp", 0o1777), ("run", 0o755), ("home", 0o755), ("var/tmp", 0o1777)):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(mode)
    # HOME first, volumes next (a volume may be mounted over HOME), then the program's
    # files, which no volume may hide (a checkout under /tmp, which pods mount over).
    home = _inside(root, spec["home"])
    _bind(spec["home_source"], home, read_only=False)
    for mount in spec["mounts"]:
        _bind(mount["source"], _inside(root, mount["target"]), read_only=mount["read_only"])
    for path in spec["program_paths"]:
        if not _visible(path, shown):
            _bind(path, _inside(root, path), read_only=True)
            shown.append(path)
    workdir = _inside(root, spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)  # as a container runtime does
    if spec.get("read_only_root"):
        for mount_point in [root, *overlays]:
            _mount("-o", "remount,ro", str(mount_point))
    return root


def become(spec: dict[str, Any]) -> None:
    root = build_root(spec)
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    if spec.get("no_new_privs"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        become(spec)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip() or f"exit {exc.returncode}"
        print(
            f"paddock-runner: cannot start the container: {' '.join(exc.cmd)}: {detail}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(128)
    except OSError as exc:
        print(f"paddock-runner: cannot start the container: {exc}", file=sys.stderr, flush=True)
        sys.exit(128)


if __name__ == "__main__":
    main()
