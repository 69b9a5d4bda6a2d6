"""The local pod network: one Linux bridge on the host, one network namespace per pod with
its own address on it, and a hosts file per pod that stands in for cluster DNS.

Each pod has its own loopback (the harness reaches its proxy sidecar on 127.0.0.1, as in
a real pod) and its own ports (every sandbox listens on 8080). Pods reach each other and the
host (Redis, the model) through the bridge. No NetworkPolicy is enforced here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import subprocess
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

HOSTS_DIR = Path("/etc/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class PodNetwork:
    def __init__(self, bridge: str, cidr: str) -> None:
        self.bridge = bridge
        # Namespaces are named after the bridge, so runners on other bridges (a demo and a
        # test run at once) never take each other's for stale ones.
        self.prefix = f"{bridge}-"
        self.network = ipaddress.ip_network(cidr)
        hosts = self.network.hosts()
        self.gateway = str(next(hosts))
        # First in, first out, as host-local IPAM hands addresses out: a freed address is
        # reused last. Reused at once, it met other pods' stale neighbour entries for the old
        # pod's MAC, and their first connections waited about 8 s for ARP to time out.
        self._free = deque(str(address) for address in hosts)

    def up(self) -> None:
        """Create the bridge (or keep it) and clear what an earlier runner left behind."""
        self.clean_stale()
        if _ip("link", "show", self.bridge, check=False).returncode != 0:
            _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "replace", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def down(self) -> None:
        self.clean_stale()
        _ip("link", "del", self.bridge, check=False)

    def clean_stale(self) -> None:
        for name in _ip("netns", "list").stdout.split():
            if name.startswith(self.prefix):
                self.remove(name)

    def add(self, key: str) -> tuple[str, str]:
        """A namespace with an address, a default route through the bridge, and an empty
        hosts file; returns (namespace, address)."""
        if not self._free:
            raise RuntimeError(f"the pod network {self.network} has no free address")
        address = self._free.popleft()
        namespace = self.prefix + key
        host_side = "pd" + key[:12]
        try:
            _ip("netns", "add", namespace)
            _ip(
                "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", namespace
            )
            _ip("link", "set", host_side, "master", self.bridge, "up")
            _ip(
                "-n", namespace, "addr", "add", f"{address}/{self.network.prefixlen}", "dev", "eth0"
            )
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "route", "add", "default", "via", self.gateway)
        except subprocess.CalledProcessError as exc:
            self.remove(namespace)
            self._free.append(address)
            raise RuntimeError(f"cannot set up {namespace}: {exc.stderr.strip()}") from exc
        (HOSTS_DIR / namespace).mkdir(parents=True, exist_ok=True)
        (HOSTS_DIR / namespace / "hosts").write_text("127.0.0.1 localhost\n")
        return namespace, address

    def remove(self, namespace: str, address: str = "") -> None:
        """Kill whatever still runs in the namespace, then delete it (and its veth pair)."""
        for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", namespace, check=False)
        shutil.rmtree(HOSTS_DIR / namespace, ignore_errors=True)
        if address:
            self._free.append(address)

    @staticmethod
    def write_hosts(namespace: str, content: str) -> None:
        """Rewrite the hosts file in place: `ip netns exec` bind-mounted this very file over
        /etc/hosts for every process of the pod, so a new file would not be seen."""
        path = HOSTS_DIR / namespace / "hosts"
        try:
            with path.open("r+") as hosts:
                if hosts.read() == content:
                    return
                hosts.seek(0)
                hosts.write(content)
                hosts.truncate()
        except FileNotFoundError:
            pass  # the pod is being removed
