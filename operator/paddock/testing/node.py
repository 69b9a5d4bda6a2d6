"""A real one-node Kubernetes cluster on this machine, made from the package registries.

`LocalNode` starts, as child processes of the test run:

- etcd + kube-apiserver (`paddock.testing.controlplane.ControlPlane`), bound to the node's
  bridge address so that pods reach it through the `kubernetes` Service;
- containerd (Debian's, with runc) with its own root, state, socket and CRI config;
- kubelet (cgroupfs driver; on cgroup v1 with `failCgroupV1: false`), kube-controller-manager,
  kube-scheduler and kube-proxy (iptables mode), all of the control plane's Kubernetes pin;
- kube-router with `--run-firewall` only: the NetworkPolicy engine (iptables + ipset);
- CoreDNS as a Deployment in kube-system behind the `kube-dns` Service;
- CNI: bridge + host-local + portmap + loopback on a bridge of its own.

Images come from no registry: a pause image (Kubernetes' pause.c), a busybox image
(Debian's busybox-static) and a CoreDNS image are written as OCI archives
(`paddock.testing.ociimage`) and imported with `ctr`. Everything is undone on exit:
processes, pods' network namespaces and mounts, the bridge, iptables chains and ipsets,
cgroups, sysctls it changed. A node whose process was killed before it could undo them
(SIGKILL, a CI timeout) leaves a stamp in /run naming its directories: the next node on the
same bridge removes what is left, instead of refusing to start.

`python -m paddock.testing.node up [--keep]` brings one up and prints its kubeconfig.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from paddock.testing.controlplane import REPO_ROOT, ControlPlane
from paddock.testing.ociimage import (
    PAUSE_IMAGE,
    ImageSpec,
    busybox_image,
    pause_image,
    write_oci_archive,
)
from paddock.testing.ports import free_port, wait_until

NODE_NAME = "paddock-node"
COREDNS_IMAGE = "paddock.local/coredns:v1.15.0"
# Chains and ipsets that kube-proxy, kube-router and the CNI plugins create; removed on exit.
_CHAIN_PREFIXES = ("KUBE-", "CNI-")
_IPSET_PREFIXES = ("KUBE-", "kube-router")
_GUARD_COMMENT = "paddock-node: pods reach nothing outside the node"


def node_binaries() -> Path:
    """The directory of hack/build-node.sh (built on first use; `PADDOCK_NODE_BIN` wins)."""
    if os.environ.get("PADDOCK_NODE_BIN"):
        return Path(os.environ["PADDOCK_NODE_BIN"])
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-node.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


def container_support() -> str | None:
    """None when this kernel runs a runc container (namespaces, cgroups); otherwise why not,
    in runc's words. Detected by trying, never guessed. A missing tool is an error, not a
    reason: hack/setup.sh installs them."""
    missing = [
        t
        for t in ("runc", "containerd", "ctr", "iptables", "ipset", "ip", "conntrack")
        if shutil.which(t) is None
    ]
    if missing or not Path("/bin/busybox").exists():
        raise RuntimeError(f"missing {missing or ['/bin/busybox']}: run bash hack/setup.sh")
    with tempfile.TemporaryDirectory(prefix="paddock-runc-probe-") as tmp:
        bundle = Path(tmp)
        (bundle / "rootfs" / "bin").mkdir(parents=True)
        shutil.copy2("/bin/busybox", bundle / "rootfs" / "bin" / "busybox")
        spec = subprocess.run(
            ["runc", "spec", "--bundle", str(bundle)], capture_output=True, text=True
        )
        if spec.returncode != 0:
            return f"runc spec failed: {spec.stderr.strip()}"
        config = json.loads((bundle / "config.json").read_text())
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/busybox", "true"]
        config["process"].pop("rlimits", None)
        (bundle / "config.json").write_text(json.dumps(config))
        name = f"paddock-probe-{os.getpid()}"
        run = subprocess.run(
            ["runc", "run", "--bundle", str(bundle), name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        if run.returncode != 0:
            return f"runc could not run a container: {(run.stderr or run.stdout).strip()}"
    return None


def _sh(*args: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


class LocalNode:
    """A one-node cluster; `kubeconfig` is an admin kubeconfig for it."""

    def __init__(
        self,
        *,
        binaries: Path | None = None,
        pod_cidr: str = "10.250.0.0/24",
        service_cidr: str = "10.0.0.0/24",
        bridge: str = "pdknode0",
        extra_images: Sequence[Path] = (),
    ) -> None:
        self.binaries = binaries or node_binaries()
        self.pod_cidr = ipaddress.ip_network(pod_cidr)
        self.service_cidr = ipaddress.ip_network(service_cidr)
        self.bridge = bridge
        self.host_ip = str(next(self.pod_cidr.hosts()))
        self.dns_ip = str(self.service_cidr[10])
        self.extra_images = list(extra_images)
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-node-"))
        self.socket = self.dir / "containerd" / "containerd.sock"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.control_plane: ControlPlane | None = None
        self._sysctls: dict[str, str] = {}
        self._route_added = False
        self._guard_added = False
        # Set once this node made its bridge: only then are the host's chains, ipsets,
        # cgroups and bridge its own to remove (a second node on the machine stops at the
        # bridge and must not tear down the first one's).
        self._owns_host = False
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------- public surface
    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    def client(self) -> httpx.Client:
        assert self.control_plane is not None
        return self.control_plane.client()

    def start(self) -> LocalNode:
        started = time.monotonic()
        try:
            self._host_network()
            self.control_plane = ControlPlane(
                bind_address=self.host_ip,
                service_cluster_ip_range=str(self.service_cidr),
                disable_admission_plugins=(),
                # Reach the kubelet at its address, never by resolving the node's name.
                extra_args=("--kubelet-preferred-address-types=InternalIP",),
            ).start()
            self._write_stamp()
            self._stamp("control_plane", started)
            self._start_containerd()
            self._import_images()
            self._stamp("containerd", started)
            self._write_cni_config()
            self._start_kubelet()
            self._start_controllers()
            self._start_kube_router()
            self._wait_node_ready()
            self._stamp("node_ready", started)
            self._install_coredns()
            self._stamp("dns_ready", started)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop everything and undo every change to the host, also after a failed start."""
        errors: list[str] = []
        if not self._owns_host:
            self._stop(*list(self.processes))
            self._stop_control_plane()
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        for step in (
            self._drain,
            lambda: self._stop("kube-controller-manager", "kube-scheduler", "kubelet"),
            self._stop_network_agents,
            lambda: self._stop("containerd"),
            self._kill_leftover_shims,
            self._unmount_all,
            self._remove_cgroups,
            # Before the bridge goes: the apiserver reaches itself at the bridge's address,
            # and without it its shutdown waits out a minute-long deadline.
            self._stop_control_plane,
            self._undo_host_network,
        ):
            try:
                step()
            except Exception as exc:  # keep cleaning; report at the end
                errors.append(repr(exc))
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            print(f"paddock.testing.node: cleanup errors: {errors}", file=sys.stderr)
        else:
            _stamp_path(self.bridge).unlink(missing_ok=True)

    def _stop_control_plane(self) -> None:
        if self.control_plane is not None:
            self.control_plane.close()

    def _write_stamp(self) -> None:
        """Who owns the bridge and where its files are: what a later node needs to clean up
        after this one if this process dies without `close` (SIGKILL, a CI timeout)."""
        stamp = {
            "pid": os.getpid(),
            "dir": str(self.dir),
            "control_plane_dir": str(self.control_plane.dir) if self.control_plane else None,
            "pod_cidr": str(self.pod_cidr),
            "service_cidr": str(self.service_cidr),
            "bridge": self.bridge,
        }
        _stamp_path(self.bridge).write_text(json.dumps(stamp))

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def kubectl_json(self, method: str, path: str, body: Any = None) -> Any:
        """One API call as the admin; raises on an error status."""
        with self.client() as client:
            response = client.request(method, path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create ``manifest`` (a plain object) through the API."""
        created: dict[str, Any] = self.kubectl_json("POST", _collection_path(manifest), manifest)
        return created

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive into the node's image store (the CRI namespace)."""
        _sh(
            self._ctr(),
            "--address",
            str(self.socket),
            "-n",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
            str(archive),
        )

    def log(self, name: str) -> str:
        path = self.dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ----------------------------------------------------------------- start steps
    def _stamp(self, what: str, started: float) -> None:
        self.timings[what] = round(time.monotonic() - started, 2)

    def _spawn(self, name: str, args: list[str], *, env: dict[str, str] | None = None) -> None:
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        log = (logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def _alive(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is not None:
            tail = "\n".join(self.log(name).splitlines()[-30:])
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def _set_sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        old = path.read_text().strip()
        if old != value:
            self._sysctls.setdefault(key, old)
            path.write_text(value)

    def _host_network(self) -> None:
        """The node's bridge with its address (pods' gateway, the apiserver's and kubelet's
        address), forwarding on, bridged traffic through iptables (for NetworkPolicy and
        Services), unrouted Service addresses kept on the bridge, and a guard so that pods
        reach nothing beyond the node."""
        if Path(f"/sys/class/net/{self.bridge}").exists():
            stale = _stale_node(self.bridge)
            if stale is None:
                raise RuntimeError(f"{self.bridge} exists already: is another node running?")
            print(
                f"paddock.testing.node: removing what a node left behind ({stale})",
                file=sys.stderr,
            )
            _sweep(stale, self.binaries)
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._owns_host = True
        self._write_stamp()
        _sh("ip", "addr", "add", f"{self.host_ip}/{self.pod_cidr.prefixlen}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        _sh("ip", "route", "add", str(self.service_cidr), "dev", self.bridge, "src", self.host_ip)
        self._route_added = True
        self._set_sysctl("net.ipv4.ip_forward", "1")
        self._set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
        _sh(
            "iptables",
            "-I",
            "FORWARD",
            "-i",
            self.bridge,
            "!",
            "-o",
            self.bridge,
            "-m",
            "comment",
            "--comment",
            _GUARD_COMMENT,
            "-j",
            "REJECT",
        )
        self._guard_added = True

    def _ctr(self) -> str:
        return shutil.which("ctr") or "ctr"

    def _start_containerd(self) -> None:
        root = self.dir / "containerd"
        root.mkdir()
        cni_bin = self.binaries / "cni"
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{root / "containerd.ttrpc.sock"}"
[debug]
  address = "{root / "debug.sock"}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  # Pods' network namespaces under the state dir, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  # As containerd 2 does: non-root containers may bind ports below 1024 and ping.
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{self.dir / "cni"}"
    max_conf_num = 1
"""
        (root / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(root / "config.toml")])

        def up() -> bool:
            self._alive("containerd")
            return (
                subprocess.run(
                    [self._ctr(), "--address", str(self.socket), "version"], capture_output=True
                ).returncode
                == 0
            )

        wait_until(up, timeout=60, what="containerd", interval=0.1)

    def _import_images(self) -> None:
        images = self.dir / "images"
        images.mkdir()
        coredns = ImageSpec(
            name=COREDNS_IMAGE,
            files={"/coredns": ((self.binaries / "coredns").read_bytes(), 0o755)},
            entrypoint=["/coredns"],
            user="65534:65534",
            env=[],
        )
        specs = [pause_image(self.binaries / "pause"), busybox_image(), coredns]
        archives = [write_oci_archive(s, images / f"{i}.tar") for i, s in enumerate(specs)]
        for archive in [*archives, *self.extra_images]:
            self.import_image(archive)

    def _write_cni_config(self) -> None:
        cni = self.dir / "cni"
        cni.mkdir(exist_ok=True)
        (self.dir / "cni-state").mkdir()
        config = {
            "cniVersion": "1.0.0",
            "name": "paddock-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.pod_cidr), "gateway": self.host_ip}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni-state"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "10-paddock.conflist").write_text(json.dumps(config, indent=2))

    def _kubeconfig_for_components(self) -> Path:
        assert self.control_plane is not None
        return self.control_plane.kubeconfig

    def _start_kubelet(self) -> None:
        assert self.control_plane is not None
        kubelet = self.dir / "kubelet"
        kubelet.mkdir()
        resolv = self.dir / "resolv.conf"
        # Pods with dnsPolicy Default (CoreDNS itself) get no upstream: nothing leaves the node.
        resolv.write_text("search paddock.invalid\n")
        certs = self.control_plane.dir / "certs"
        self.kubelet_port, self.kubelet_healthz = free_port(), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.host_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            # This kernel has cgroup v1 hierarchies; kubelet 1.35 refuses them unless told.
            "failCgroupV1": False,
            "failSwapOn": False,
            # RLIMIT_NOFILE cannot be raised here (no CAP_SYS_RESOURCE): stay within the limit.
            "maxOpenFiles": 16384,
            "oomScoreAdj": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(certs / "client-ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [self.dns_ip],
            "resolvConf": str(resolv),
            "podLogsDir": str(self.dir / "pod-logs"),
            # Images come from no registry: never garbage-collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
            "registerNode": True,
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "localStorageCapacityIsolation": True,
            "shutdownGracePeriod": "0s",
        }
        (kubelet / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(self.binaries / "kubelet"),
                f"--config={kubelet / 'config.yaml'}",
                f"--kubeconfig={self._kubeconfig_for_components()}",
                f"--root-dir={kubelet / 'root'}",
                f"--cert-dir={kubelet / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.host_ip}",
                "--v=1",
            ],
        )

    def _start_controllers(self) -> None:
        assert self.control_plane is not None
        kubeconfig = str(self._kubeconfig_for_components())
        certs = self.control_plane.dir / "certs"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={certs / 'sa-signer.key'}",
                f"--root-ca-file={certs / 'serving-ca.crt'}",
                "--use-service-account-credentials=false",
                "--allocate-node-cidrs=false",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": kubeconfig},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": str(self.pod_cidr),
            "detectLocalMode": "ClusterCIDR",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # NodePorts only on the node's bridge address, never on the machine's own interface.
            "nodePortAddresses": [f"{self.host_ip}/32"],
            # Leave the machine's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
        }
        (self.dir / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy_config))
        self._spawn(
            "kube-proxy",
            [str(self.binaries / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}"],
        )

    def _start_kube_router(self) -> None:
        """After the node is registered: kube-router looks its own node up and exits otherwise."""
        kubeconfig = str(self._kubeconfig_for_components())

        def registered() -> bool:
            self._alive("kubelet")
            with self.client() as client:
                return client.get(f"/api/v1/nodes/{NODE_NAME}").status_code == 200

        wait_until(registered, timeout=120, what=f"node {NODE_NAME} registered", interval=0.1)
        self._spawn(
            "kube-router",
            [
                str(self.binaries / "kube-router"),
                f"--kubeconfig={kubeconfig}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-ipv6=false",
                f"--hostname-override={NODE_NAME}",
                f"--service-cluster-ip-range={self.service_cidr}",
                f"--health-port={free_port()}",
                "--metrics-port=0",
                "--iptables-sync-period=1m",
            ],
        )

    def _wait_node_ready(self) -> None:
        def ready() -> bool:
            for name in (
                "kubelet",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
                "kube-router",
                "containerd",
            ):
                self._alive(name)
            with self.client() as client:
                response = client.get(f"/api/v1/nodes/{NODE_NAME}")
            if response.status_code != 200:
                return False
            conditions = response.json().get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until(ready, timeout=180, what=f"node {NODE_NAME} Ready", interval=0.25)

        def default_service_account() -> bool:
            with self.client() as client:
                path = "/api/v1/namespaces/default/serviceaccounts/default"
                return client.get(path).status_code == 200

        wait_until(default_service_account, timeout=60, what="default ServiceAccount")

    def _install_coredns(self) -> None:
        corefile = (
            ".:53 {\n    errors\n    health :8080\n    ready :8181\n"
            "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
            "        pods insecure\n        ttl 5\n    }\n"
            "    cache 5\n    loop\n    loadbalance\n}\n"
        )
        labels = {"k8s-app": "kube-dns"}
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "system:coredns"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "system:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:coredns",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}
                ],
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": corefile},
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "serviceAccountName": "coredns",
                            "dnsPolicy": "Default",
                            "containers": [
                                {
                                    "name": "coredns",
                                    "image": COREDNS_IMAGE,
                                    "imagePullPolicy": "Never",
                                    "args": ["-conf", "/etc/coredns/Corefile", "-dns.port", "53"],
                                    "ports": [
                                        {"containerPort": 53, "protocol": "UDP", "name": "dns"},
                                        {"containerPort": 53, "protocol": "TCP", "name": "dns-tcp"},
                                    ],
                                    "readinessProbe": {
                                        "httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 1,
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                        "runAsNonRoot": True,
                                        "readOnlyRootFilesystem": True,
                                    },
                                    "volumeMounts": [
                                        {"name": "config", "mountPath": "/etc/coredns"}
                                    ],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "selector": labels,
                    "clusterIP": self.dns_ip,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
        ]
        for manifest in objects:
            self.apply(manifest)

        def dns_ready() -> bool:
            for name in ("kubelet", "containerd"):
                self._alive(name)
            path = "/apis/apps/v1/namespaces/kube-system/deployments/coredns"
            status = self.kubectl_json("GET", path).get("status", {})
            return int(status.get("readyReplicas", 0)) >= 1

        wait_until(dns_ready, timeout=180, what="CoreDNS Ready", interval=0.25)

    # ----------------------------------------------------------------- teardown steps
    def _drain(self) -> None:
        """Delete every pod and wait for kubelet to stop their sandboxes (that is what
        releases their network namespaces, veths and IP addresses through CNI)."""
        if "kubelet" not in self.processes or self.processes["kubelet"].poll() is not None:
            return
        self._stop("kube-controller-manager", "kube-scheduler")
        with self.client() as client:
            pods = client.get("/api/v1/pods").json().get("items", [])
            for pod in pods:
                meta = pod["metadata"]
                client.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    params={"gracePeriodSeconds": "0"},
                )
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: not self._running_tasks(), timeout=60, what="no task left", interval=0.25
            )

    def _running_tasks(self) -> list[str]:
        result = subprocess.run(
            [self._ctr(), "--address", str(self.socket), "-n", "k8s.io", "tasks", "ls", "-q"],
            capture_output=True,
            text=True,
        )
        return result.stdout.split() if result.returncode == 0 else []

    def _stop(self, *names: str) -> None:
        for name in names:
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _stop_network_agents(self) -> None:
        self._stop("kube-proxy", "kube-router")
        if not self.binaries.exists():
            return
        for args in (
            [str(self.binaries / "kube-proxy"), "--cleanup"],
            [
                str(self.binaries / "kube-router"),
                "--cleanup-config",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-ipv6=false",
            ],
        ):
            if Path(args[0]).exists() and self.control_plane is not None:
                subprocess.run(
                    [*args, f"--kubeconfig={self.control_plane.kubeconfig}"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
        _remove_iptables_chains(self.bridge)
        for name in _sh("ipset", "list", "-n", check=False).split():
            if name.startswith(_IPSET_PREFIXES):
                _sh("ipset", "destroy", name, check=False)

    def _kill_leftover_shims(self) -> None:
        """containerd-shim-runc-v2 processes (and their containers) outlive containerd."""
        marker = str(self.socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"containerd-shim-runc-v2")
                and marker.encode() in cmdline
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(proc.name), signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        """Every mount under the node's directory (overlay rootfs, tmpfs volumes, netns)."""
        prefix = str(self.dir)
        for _ in range(3):
            mounts = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(prefix)
            ]
            if not mounts:
                return
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        """kubelet's kubepods hierarchy, in every cgroup v1 controller and the v2 mount."""
        root = Path("/sys/fs/cgroup")
        for top in [*root.glob("*/kubepods"), *root.glob("*/kubepods.slice")]:
            for directory in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def _undo_host_network(self) -> None:
        if self._guard_added:
            _sh(
                "iptables",
                "-D",
                "FORWARD",
                "-i",
                self.bridge,
                "!",
                "-o",
                self.bridge,
                "-m",
                "comment",
                "--comment",
                _GUARD_COMMENT,
                "-j",
                "REJECT",
                check=False,
            )
            self._guard_added = False
        if self._route_added:
            _sh("ip", "route", "del", str(self.service_cidr), "dev", self.bridge, check=False)
            self._route_added = False
        if Path(f"/sys/class/net/{self.bridge}").exists():
            _sh("ip", "link", "del", self.bridge, check=False)
        for key, old in self._sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key.replace(".", "/")).write_text(old)
        self._sysctls.clear()


def _stamp_path(bridge: str) -> Path:
    # /run is a tmpfs: a reboot clears the stamp together with what it describes.
    return Path(f"/run/paddock-node-{bridge}.json")


def _stale_node(bridge: str) -> dict[str, Any] | None:
    """The stamp of the node that made ``bridge``, if the process that made it is gone."""
    try:
        stamp: dict[str, Any] = json.loads(_stamp_path(bridge).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(stamp["pid"]), 0)
    except ProcessLookupError:
        return stamp
    except (PermissionError, KeyError, ValueError):
        return None
    return None


def _sweep(stale: dict[str, Any], binaries: Path) -> None:
    """Undo what a node whose process died left on the host: kill its processes (the
    components, named by its directories, and every pod process, in kubelet's cgroups), then
    the usual cleanup as its owner."""
    markers = [m.encode() for m in (stale["dir"], stale.get("control_plane_dir")) if m]

    def leftovers() -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                cgroups = (proc / "cgroup").read_text()
            except OSError:
                continue
            if "/kubepods" in cgroups or any(m in cmdline for m in markers):
                found.append(int(proc.name))
        return found

    for pid in leftovers():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not leftovers(), timeout=20, what="the stale node's processes to go")
    node = LocalNode(
        binaries=binaries,
        pod_cidr=stale["pod_cidr"],
        service_cidr=stale["service_cidr"],
        bridge=stale["bridge"],
    )
    shutil.rmtree(node.dir, ignore_errors=True)
    node.dir = Path(stale["dir"])
    node.socket = node.dir / "containerd" / "containerd.sock"
    node._owns_host = node._route_added = node._guard_added = True
    node.close()
    if stale.get("control_plane_dir"):
        shutil.rmtree(stale["control_plane_dir"], ignore_errors=True)


def _remove_iptables_chains(bridge: str) -> None:
    """Delete the rules that jump into KUBE-*/CNI-* chains, then those chains, in every table."""
    del bridge
    dump = _sh("iptables-save", check=False)
    table = ""
    jumps: list[tuple[str, str]] = []
    chains: list[tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(_CHAIN_PREFIXES):
                chains.append((table, chain))
        elif line.startswith("-A "):
            parts = line.split()
            chain = parts[1]
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if not chain.startswith(_CHAIN_PREFIXES) and target.startswith(_CHAIN_PREFIXES):
                jumps.append((table, line[3:]))
    for table, rule in jumps:
        subprocess.run(
            ["sh", "-c", f"iptables -t {table} -D {rule}"], capture_output=True, check=False
        )
    for table, chain in chains:
        _sh("iptables", "-t", table, "-F", chain, check=False)
    for table, chain in chains:
        _sh("iptables", "-t", table, "-X", chain, check=False)


def _collection_path(manifest: dict[str, Any]) -> str:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    plural = {
        "Endpoints": "endpoints",
        "NetworkPolicy": "networkpolicies",
    }.get(kind, re.sub(r"y$", "ie", kind.lower()) + "s")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = manifest.get("metadata", {}).get("namespace")
    cluster_scoped = kind in {"Namespace", "ClusterRole", "ClusterRoleBinding", "Node"}
    if namespace and not cluster_scoped:
        return f"{base}/namespaces/{namespace}/{plural}"
    return f"{base}/{plural}"


@contextlib.contextmanager
def local_node(**kwargs: Any) -> Iterator[LocalNode]:
    with LocalNode(**kwargs) as node:
        yield node


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paddock.testing.node")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring a node up and print its kubeconfig path")
    up.add_argument("--keep", action="store_true", help="keep it running until Ctrl-C")
    args = parser.parse_args(argv)
    reason = container_support()
    if reason:
        print(f"cannot run containers here: {reason}", file=sys.stderr)
        return 1
    started = time.monotonic()
    with LocalNode() as node:
        print(f"node Ready in {time.monotonic() - started:.1f}s ({node.timings})", file=sys.stderr)
        print(node.kubeconfig, flush=True)
        if args.command == "up" and args.keep:
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
