"""Real sandbox servers (`python -m paddock.sandbox` subprocesses) for tests and benches."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from paddock.sandbox import SandboxClient
from paddock.testing.ports import free_port, wait_until

CANARY = "PADDOCK_TEST_CANARY"
"""An environment variable every server is started with; it must never reach a command."""


@dataclass
class RunningSandbox:
    """A sandbox server process and what a test needs to reach it."""

    url: str
    token: str
    workdir: Path
    home: Path
    outputs: Path
    """The outputs directory (in place of `/mnt/session/outputs`)."""
    canary: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = None) -> SandboxClient:
        return SandboxClient(self.url, token or self.token)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(
    base: Path,
    *args: str,
    workdir: Path | None = None,
    wrapper: tuple[str, ...] = (),
    port: int | None = None,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> RunningSandbox:
    """Start a server with its own workdir, HOME and token under ``base``; wait until it
    answers. ``wrapper`` prefixes the command (for example to drop privileges); ``port``
    and ``token`` are chosen when not given; ``env`` adds to the server's environment."""
    base.mkdir(parents=True, exist_ok=True)
    home = base / "home"
    home.mkdir(exist_ok=True)
    if workdir is None:
        workdir = base / "workspace"
        workdir.mkdir(exist_ok=True)
    token = token or secrets.token_urlsafe(24)
    (base / "token").write_text(token + "\n")
    canary = f"canary-{secrets.token_hex(8)}"
    port = port or free_port()
    log = base / "server.log"
    command = [
        *wrapper,
        sys.executable,
        "-m",
        "paddock.sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workdir",
        str(workdir),
        "--token-file",
        str(base / "token"),
        "--outputs-dir",
        str(base / "outputs"),
        *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {}), "HOME": str(home), CANARY: canary},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningSandbox(
        f"http://127.0.0.1:{port}", token, workdir, home, base / "outputs", canary, process, log
    )

    def answers() -> bool:
        if process.poll() is not None:
            return True  # no use waiting: reported below
        return httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200

    try:
        # Time for an Environment's packages, installed before the server listens.
        wait_until(answers, timeout=60 if env else 20, what="sandbox server")
        if process.poll() is not None:
            raise RuntimeError(f"sandbox exited with {process.returncode}:\n{running.logs()}")
    except BaseException:
        running.stop()
        raise
    return running
