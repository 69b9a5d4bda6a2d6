"""A real etcd + kube-apiserver on loopback, started the way controller-runtime's envtest
does: self-signed serving certificate, a client CA with an admin certificate in
`system:masters`, service-account signing keys, RBAC on. No scheduler, controller-manager or
kubelet: pods never run and owner references are not garbage-collected.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from paddock.kube import APPLY
from paddock.kube import path as api_path
from paddock.testing.certs import TinyCA, service_account_signing_pair
from paddock.testing.ports import die_with_parent, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[3]


def control_plane_binaries() -> Path:
    """The directory holding `kube-apiserver` and `etcd`.

    `PADDOCK_CONTROLPLANE_BIN` (or envtest's `KUBEBUILDER_ASSETS`) wins; otherwise
    hack/build-controlplane.sh builds them into the cache (a no-op when already built).
    """
    for variable in ("PADDOCK_CONTROLPLANE_BIN", "KUBEBUILDER_ASSETS"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-controlplane.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


class ControlPlane:
    """etcd and kube-apiserver as child processes; `kubeconfig` is an admin kubeconfig.

    The defaults serve envtest-style tests on loopback. A real node (paddock.testing.node)
    passes ``bind_address`` (an address its pods reach), enables the ServiceAccount admission
    plugin (its controller-manager makes the default ServiceAccounts) and adds flags.
    """

    def __init__(
        self,
        binaries: Path | None = None,
        *,
        bind_address: str = "127.0.0.1",
        service_cluster_ip_range: str = "10.0.0.0/24",
        disable_admission_plugins: Sequence[str] = ("ServiceAccount",),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries or control_plane_binaries()
        self.bind_address = bind_address
        self.service_cluster_ip_range = service_cluster_ip_range
        self.disable_admission_plugins = tuple(disable_admission_plugins)
        self.extra_args = tuple(extra_args)
        # etcd's data on tmpfs where there is one: fsync cost is what makes etcd slow in tests.
        shm = Path("/dev/shm")
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-cp-", dir=shm if shm.is_dir() else None))
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.kubeconfig = self.dir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://{self.bind_address}:{self.port}"

    def start(self) -> ControlPlane:
        try:
            self._write_credentials()
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_credentials(self) -> None:
        certs = self.dir / "certs"
        certs.mkdir()
        serving_ca, client_ca = TinyCA("paddock-serving-ca"), TinyCA("paddock-client-ca")
        (certs / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
        (certs / "client-ca.crt").write_bytes(client_ca.cert_pem)
        self.serving_ca, self.client_ca = serving_ca, client_ca
        # In-cluster clients reach the apiserver as the `kubernetes` Service: its first address.
        service_ip = str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts()))
        hosts: tuple[str, ...] = (
            "127.0.0.1",
            "localhost",
            self.bind_address,
            service_ip,
            "kubernetes",
        )
        hosts += ("kubernetes.default", "kubernetes.default.svc")
        serving_ca.issue("kube-apiserver", hosts=tuple(dict.fromkeys(hosts)), server=True).write(
            certs, "apiserver"
        )
        service_account_signing_pair().write(certs, "sa-signer")
        admin = client_ca.issue("paddock-admin", organizations=("system:masters",))
        self.admin_cert, self.admin_key = admin.write(certs, "admin")
        # What the apiserver presents to kubelets (logs, exec, port-forward).
        client_ca.issue("kube-apiserver-kubelet-client", organizations=("system:masters",)).write(
            certs, "kubelet-client"
        )
        self.ca_file = certs / "serving-ca.crt"

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "paddock-test",
                    "clusters": [
                        {
                            "name": "paddock-test",
                            "cluster": {
                                "server": self.url,
                                "certificate-authority-data": b64(serving_ca.cert_pem),
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": "admin",
                            "user": {
                                "client-certificate-data": b64(admin.cert_pem),
                                "client-key-data": b64(admin.key_pem),
                            },
                        }
                    ],
                    "contexts": [
                        {
                            "name": "paddock-test",
                            "context": {"cluster": "paddock-test", "user": "admin"},
                        }
                    ],
                }
            )
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
            )
        )

    def _start_etcd(self) -> None:
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries / "etcd"),
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        wait_until(
            lambda: httpx.get(f"{client_url}/health", timeout=1).status_code == 200,
            timeout=30,
            what="etcd",
        )

    def _start_apiserver(self) -> None:
        certs = self.dir / "certs"
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'client-ca.crt'}",
                f"--secure-port={self.port}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.bind_address}",
                f"--service-cluster-ip-range={self.service_cluster_ip_range}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                # Without a controller-manager no default ServiceAccounts exist: do not require them.
                f"--disable-admission-plugins={','.join(self.disable_admission_plugins)}",
                f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
                f"--kubelet-client-key={certs / 'kubelet-client.key'}",
                f"--service-account-issuer=https://127.0.0.1:{self.port}/",
                f"--service-account-key-file={certs / 'sa-signer.crt'}",
                f"--service-account-signing-key-file={certs / 'sa-signer.key'}",
                *self.extra_args,
            ],
        )
        wait_until(
            lambda: self.get("/readyz").status_code == 200,
            timeout=120,
            what="kube-apiserver",
            interval=0.2,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """TLS settings of the admin: trusts the serving CA, presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def client(self) -> httpx.Client:
        """An httpx client authenticated as the admin."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=30)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def read(self, api_version: str, kind: str, namespace: str | None, name: str = "") -> Any:
        """An object (None if absent), or the items of a list when ``name`` is empty."""
        reply = self.get(api_path(api_version, kind, namespace, name))
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return reply.json() if name else reply.json()["items"]

    def apply(
        self, *objects: dict[str, Any], namespace: str = "default", manager: str = "paddock-stack"
    ) -> list[dict[str, Any]]:
        """Server-side apply, as `kubectl apply --server-side` does."""
        applied = []
        with self.client() as client:
            for obj in objects:
                meta = obj["metadata"]
                if obj["kind"] != "Namespace":
                    meta.setdefault("namespace", namespace)
                reply = client.patch(
                    api_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
                    content=json.dumps(obj),
                    headers={"Content-Type": APPLY},
                    params={"fieldManager": manager, "force": "true"},
                )
                if reply.status_code >= 300:
                    raise RuntimeError(f"applying {obj['kind']} {meta['name']}: {reply.text}")
                applied.append(reply.json())
        return applied

    def apply_crds(self, directory: Path = REPO_ROOT / "crds", *, timeout: float = 60) -> list[str]:
        """Create or replace every CRD in ``directory`` and wait until each is Established."""
        names = []
        with self.client() as client:
            for path in sorted(directory.glob("*.yaml")):
                crd = yaml.safe_load(path.read_text())
                name = crd["metadata"]["name"]
                names.append(name)
                base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
                existing = client.get(f"{base}/{name}")
                if existing.status_code == 200:
                    crd["metadata"]["resourceVersion"] = existing.json()["metadata"][
                        "resourceVersion"
                    ]
                    response = client.put(f"{base}/{name}", json=crd)
                else:
                    response = client.post(base, json=crd)
                if response.status_code >= 300:
                    raise RuntimeError(f"installing {path.name} failed: {response.text}")
            deadline = time.monotonic() + timeout
            for name in names:
                wait_until(
                    partial(_established, client, name),
                    timeout=max(1.0, deadline - time.monotonic()),
                    what=f"CRD {name}",
                )
        return names

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _established(client: httpx.Client, name: str) -> bool:
    crd = client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
    conditions = crd.get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
