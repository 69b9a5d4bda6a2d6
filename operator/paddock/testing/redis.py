"""A real redis-server on a free loopback port, with AOF persistence on."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from paddock.testing.ports import die_with_parent, free_port, wait_until


class RedisServer:
    """One redis-server process. ``restart()`` keeps the port and the data directory.

    ``appendfsync`` defaults to ``always`` so that every acknowledged write survives
    even a SIGKILL of the server, which is what the event log promises its callers.
    """

    def __init__(
        self, *, appendfsync: str = "always", binary: str | None = None, bind: str = "127.0.0.1"
    ) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise RuntimeError("redis-server not found: run `bash hack/setup.sh` to install it")
        self.binary = found
        self.appendfsync = appendfsync
        self.bind = bind
        """Addresses to listen on, space-separated; 127.0.0.1 comes first."""
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            *self.bind.split(),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            # Protected mode refuses every address but loopback; another address given
            # here is a host-only one (the local pod network's bridge).
            "--protected-mode",
            "yes" if self.bind == "127.0.0.1" else "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_until(
                lambda: bool(client.ping()), timeout=20, what=f"redis-server on :{self.port}"
            )
        finally:
            client.close()
        return self

    def stop(self, *, hard: bool = False) -> None:
        """Stop the server: SIGKILL when ``hard``, else a clean SIGTERM (flushes the AOF)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.process.wait(timeout=20)
        self.process = None

    def restart(self, *, hard: bool = False) -> None:
        self.stop(hard=hard)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
