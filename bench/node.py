"""Start-up figures of the one-node cluster (paddock.testing.node).

- cold start: the node's and the control plane's binaries dropped from the page cache first
  (posix_fadvise DONTNEED on those files only), then `LocalNode` from nothing to node Ready
  and to CoreDNS Ready (a new containerd root each time, images imported each time);
- warm start: the same again right after, binaries in the page cache;
- pod start: a busybox pod created -> Ready (readiness probe on its port), p50/p95 over
  ``--pods`` pods, one after another;
- stop: `LocalNode.close()` with its pods, until every change to the host is undone.

Binaries are built first if needed (not timed). Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from paddock.testing.controlplane import control_plane_binaries
from paddock.testing.node import LocalNode, node_binaries
from paddock.testing.ociimage import BUSYBOX_IMAGE


def _drop_page_cache(*directories: Path) -> None:
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def _pod_ready_seconds(node: LocalNode, index: int) -> float:
    name = f"bench-{index}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", "exec httpd -f -p 8080 -h /tmp"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    started = time.monotonic()
    node.apply(pod)
    with node.client() as client:
        while True:
            status = client.get(f"/api/v1/namespaces/default/pods/{name}").json()["status"]
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            ):
                return time.monotonic() - started
            if time.monotonic() - started > 120:
                raise TimeoutError(f"pod {name} not Ready after 120s")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=5, help="pods started for pod_ready_*")
    args = parser.parse_args()
    binaries, plane = node_binaries(), control_plane_binaries()
    figures: dict[str, float] = {}
    for kind in ("cold", "warm"):
        if kind == "cold":
            _drop_page_cache(binaries, plane)
        started = time.monotonic()
        node = LocalNode(binaries=binaries).start()
        figures[f"node_{kind}_ready_s"] = node.timings["node_ready"]
        figures[f"node_{kind}_dns_ready_s"] = round(time.monotonic() - started, 2)
        if kind == "warm":
            samples = sorted(_pod_ready_seconds(node, i) for i in range(args.pods))
            figures["pod_ready_p50_s"] = round(statistics.median(samples), 2)
            figures["pod_ready_p95_s"] = round(
                samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2
            )
        stopping = time.monotonic()
        node.close()
        figures[f"node_{kind}_stop_s"] = round(time.monotonic() - stopping, 2)
    print(" ".join(f"{key}={value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
