"""The credential proxy as a real process, and its Secret files laid out as the kubelet
mounts them: for tests, benches and the local pod runner."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from paddock.testing.ports import free_port, wait_until

PYTHON = sys.executable


@dataclass
class Secrets:
    """Secret files laid out as the kubelet mounts a Secret volume (a timestamped directory,
    a ``..data`` symlink to it, one symlink per key), root-only in a private directory."""

    dir: Path
    api_key: str = field(default_factory=lambda: "sk-ant-test-" + secrets.token_hex(16))
    git_token: str = field(default_factory=lambda: "ghp_" + secrets.token_hex(16))
    token_key: str = field(default_factory=lambda: secrets.token_hex(32))
    _version: int = field(default=0, init=False)

    NAMES = ("api_key", "git_token", "token_key")

    def __post_init__(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._publish()
        for name in self.NAMES:
            (self.dir / name).symlink_to(f"..data/{name}")

    def path(self, name: str) -> Path:
        return self.dir / name

    def rotate(self, **values: str) -> None:
        """Replace values the way the kubelet does: write a new directory, swap ``..data``
        atomically, delete the old directory."""
        for name, value in values.items():
            setattr(self, name, value)
        old = (self.dir / "..data").resolve()
        self._publish()
        shutil.rmtree(old)

    def _publish(self) -> None:
        self._version += 1
        version = self.dir / f"..v{self._version}"
        version.mkdir(mode=0o700)
        for name in self.NAMES:
            (version / name).write_text(getattr(self, name) + "\n")
            (version / name).chmod(0o600)
        staging = self.dir / "..data_tmp"
        staging.symlink_to(version.name)
        os.replace(staging, self.dir / "..data")

    def values(self) -> dict[str, str]:
        """Every secret, and the Basic form the git token travels in upstream."""
        basic = base64.b64encode(f"x-access-token:{self.git_token}".encode()).decode()
        return {
            "api_key": self.api_key,
            "git_token": self.git_token,
            "token_key": self.token_key,
            "git_token_basic": basic,
        }


def private_hosts(path: Path, names: dict[str, str]) -> list[str] | None:
    """A wrapper command (for `ProxyProcess.wrapper`) that gives the proxy a hosts file of
    its own at ``path``, resolving each name of ``names`` to its address, in a private mount
    namespace: names without a DNS server. None without root or unshare."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in names.items())]
    path.write_text("\n".join(lines) + "\n")
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, str(path)]


class ProxyProcess:
    """``python -m paddock.proxy`` with a config written by the test; stdout is the audit log."""

    def __init__(self, workdir: Path, secrets_: Secrets, **config: Any) -> None:
        self.workdir = workdir
        self.secrets = secrets_
        self.api_port, self.egress_port, self.admin_port = free_port(), free_port(), free_port()
        self.config_path = workdir / "proxy.yaml"
        self.stdout_path = workdir / "proxy.stdout"
        self.stderr_path = workdir / "proxy.stderr"
        self.config: dict[str, Any] = {
            "listeners": {
                "api": {"host": "127.0.0.1", "port": self.api_port},
                "egress": {"host": "127.0.0.1", "port": self.egress_port},
                "admin": {"host": "127.0.0.1", "port": self.admin_port},
            },
            "api_key_file": str(secrets_.path("api_key")),
            "token_key_file": str(secrets_.path("token_key")),
            **config,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []
        """A command line the proxy runs under, for example one that gives it a hosts file."""

    def write_config(self) -> None:
        """Replace the config file atomically, as a ConfigMap update does."""
        staging = self.config_path.with_suffix(".tmp")
        staging.write_text(yaml.safe_dump(self.config))
        os.replace(staging, self.config_path)

    def start(self) -> ProxyProcess:
        self.write_config()
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                [*self.wrapper, PYTHON, "-m", "paddock.proxy", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
            )
        wait_until(self._healthy, timeout=15, what="credential proxy")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"proxy exited: {self.stderr_path.read_text()}")
        return httpx.get(f"{self.admin_url}/healthz", timeout=1).status_code == 200

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def mint(self, session_id: str, environment: str) -> str:
        """An egress token from the admin listener, as the harness gets it."""
        reply = httpx.post(
            f"{self.admin_url}/v1/session-tokens",
            json={"session_id": session_id, "environment": environment},
        )
        reply.raise_for_status()
        return str(reply.json()["token"])

    def proxy_url(self, session_id: str, token: str) -> str:
        return f"http://{session_id}:{token}@127.0.0.1:{self.egress_port}"

    def logs(self) -> str:
        """Everything the proxy wrote: the audit trail and its operational log."""
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines()]

    def last_entry(self, **match: Any) -> dict[str, Any]:
        """The last audit entry with the given field values, waiting for it to be written
        (a tunnel is audited when both of its directions ended, after the client saw EOF)."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [e for e in self.audit() if all(e.get(k) == v for k, v in match.items())]
            return bool(found)

        wait_until(written, timeout=10, what=f"audit entry {match}")
        return found[-1]
