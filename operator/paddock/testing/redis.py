"""A real redis-server on a free loopback port, with AOF persistence on and Paddock's Redis
users (the operator's, the gateway's, the default user off), as the chart configures it."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import redis

from paddock.eventlog import GATEWAY_USER, OPERATOR_USER, acl_file, harness_rules, harness_user
from paddock.testing.certs import TinyCA
from paddock.testing.ports import die_with_parent, free_port, wait_until


class RedisServer:
    """One redis-server process. ``restart()`` keeps the port and the data directory (and,
    like a real restart, forgets tenant users the operator provisioned: they are not in the
    ACL file).

    ``appendfsync`` defaults to ``always`` so that every acknowledged write survives
    even a SIGKILL of the server, which is what the event log promises its callers.

    ``url`` carries the operator user's credentials (everything, ACL administration
    included): what a test or a component that is not under test needs. ``gateway_url`` and
    ``tenant_url(namespace)`` are the restricted users; ``plain_url`` has no credentials.
    With ``tls``, ``tls_port`` also listens with TLS (``rediss_url``, by the name
    ``localhost``), with a certificate for that name only from a CA of its own (``ca_file``).
    """

    def __init__(
        self,
        *,
        appendfsync: str = "always",
        binary: str | None = None,
        bind: str = "127.0.0.1",
        tls: bool = False,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if not found:
            raise RuntimeError("redis-server not found: run `bash hack/setup.sh` to install it")
        self.binary = found
        self.appendfsync = appendfsync
        self.bind = bind
        """Addresses to listen on, space-separated; 127.0.0.1 comes first."""
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-redis-"))
        self.ca_file: Path | None = None
        self._tls_pair: tuple[Path, Path] | None = None
        if tls:
            ca = TinyCA("paddock-redis-test-ca")
            self.ca_file = self.dir / "ca.crt"
            self.ca_file.write_bytes(ca.cert_pem)
            pair = ca.issue("redis", hosts=("localhost",), server=True)
            self._tls_pair = pair.write(self.dir, "server")
        self.process: subprocess.Popen[bytes] | None = None
        self.operator_password = secrets.token_urlsafe(24)
        self.gateway_password = secrets.token_urlsafe(24)
        self._tenant_passwords: dict[str, str] = {}
        (self.dir / "users.acl").write_text(
            acl_file(
                operator_password=self.operator_password,
                gateway_password=self.gateway_password,
                default_password=secrets.token_urlsafe(24),  # given to no one
            )
        )

    def _url(self, user: str | None = None, password: str = "", *, scheme: str = "redis") -> str:
        host, port = (
            ("localhost", self.tls_port) if scheme == "rediss" else ("127.0.0.1", self.port)
        )
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
        return f"{scheme}://{auth}{host}:{port}/0"

    @property
    def url(self) -> str:
        """The operator's URL: every command on every key."""
        return self._url(OPERATOR_USER, self.operator_password)

    @property
    def plain_url(self) -> str:
        """No credentials: the default user's, whose password no one has."""
        return self._url()

    @property
    def gateway_url(self) -> str:
        return self._url(GATEWAY_USER, self.gateway_password)

    @property
    def rediss_url(self) -> str:
        """The TLS listener, as the operator (needs ``tls``)."""
        if self.tls_port is None:
            raise RuntimeError("this server has no TLS listener")
        return self._url(OPERATOR_USER, self.operator_password, scheme="rediss")

    def tenant_password(self, tenant: str) -> str:
        """The password of tenant ``tenant``'s harness user (made once per server)."""
        return self._tenant_passwords.setdefault(tenant, secrets.token_urlsafe(24))

    def tenant_url(self, tenant: str) -> str:
        """Tenant ``tenant``'s harness user, provisioned as the operator does it."""
        password = self.tenant_password(tenant)
        with self.admin() as client:
            client.execute_command(
                "ACL", "SETUSER", harness_user(tenant), *harness_rules(tenant, password)
            )
        return self._url(harness_user(tenant), password)

    def admin(self) -> redis.Redis:
        """A synchronous client as the operator."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

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
            "--aclfile",
            str(self.dir / "users.acl"),
        ]
        if self._tls_pair is not None:
            cert, key = self._tls_pair
            args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-auth-clients", "no"]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
        )
        client = self.admin()
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
