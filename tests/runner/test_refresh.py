"""The local pod runner refreshes ConfigMap and Secret volumes of running pods, as a kubelet
does (a new directory and an atomic ``..data`` swap, which the credential proxy's file watch
sees), and keeps environment variables as they were at the start. Real apiserver, real pod
processes."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from paddock.kube import KubeClient
from paddock.runner.network import PodNetwork
from paddock.runner.node import Runner
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import wait_until_async

NAMESPACE = "runner-refresh"

# Prints what it sees whenever it changes: the mounted files and a variable taken from the
# same ConfigMap at the start.
PROGRAM = textwrap.dedent(
    """
    import os, pathlib, time
    seen = None
    while True:
        now = (
            pathlib.Path("/etc/config/value").read_text(),
            pathlib.Path("/etc/secret/token").read_text(),
            os.environ["VALUE"],
        )
        if now != seen:
            print("config=%s secret=%s env=%s" % now, flush=True)
            seen = now
        time.sleep(0.1)
    """
)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the local pod runner needs root (network namespaces, bind mounts, other uids)"
    for tool in ("ip", "mount", "unshare"):
        if shutil.which(tool) is None:
            return f"the local pod runner needs {tool}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


@pytest.fixture
async def runner(
    control_plane: ControlPlane, tmp_path: Path
) -> AsyncIterator[tuple[KubeClient, Path]]:
    kube = KubeClient.from_environment(str(control_plane.kubeconfig))
    if await kube.find("v1", "Namespace", None, NAMESPACE) is None:
        await kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
    state = tmp_path / "runner"
    state.mkdir(mode=0o700)
    # Its own bridge and addresses, apart from `make demo` and tests/e2e.
    network = PodNetwork("paddock-rt", "10.246.0.0/16")
    task = asyncio.create_task(Runner(kube, network, state, [NAMESPACE]).run())
    try:
        yield kube, state
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await kube.aclose()


def _configmap(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": NAMESPACE},
        "data": {"value": value},
    }


def _secret(token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": NAMESPACE},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "reader", "namespace": NAMESPACE},
    "spec": {
        "containers": [
            {
                "name": "reader",
                "image": "python",
                "command": ["python", "-c", PROGRAM],
                "env": [
                    {
                        "name": "VALUE",
                        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "value"}},
                    }
                ],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config", "readOnly": True},
                    {"name": "secret", "mountPath": "/etc/secret", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "settings"}},
            {"name": "secret", "secret": {"secretName": "token"}},
        ],
    },
}


async def test_configmap_and_secret_changes_reach_a_running_pod_without_a_restart(
    runner: tuple[KubeClient, Path],
) -> None:
    kube, state = runner
    await kube.create(_configmap("one"))
    await kube.create(_secret("s1"))
    await kube.create(POD)

    def output() -> str:
        logs = list((state / "pods").glob(f"{NAMESPACE}_reader_*/reader.log"))
        return logs[0].read_text() if logs else ""

    async def shows(line: str) -> bool:
        return line in output()

    await wait_until_async(
        lambda: shows("config=one secret=s1 env=one"), timeout=60, what="the pod's first view"
    )
    await kube.apply(_configmap("two"), manager="test")
    await kube.apply(_secret("s2"), manager="test")
    await wait_until_async(
        lambda: shows("config=two secret=s2 env=one"), timeout=20, what="the refreshed volumes"
    )
    # The same process saw it (no restart), the files swapped in as a kubelet swaps them.
    pod = await kube.get("v1", "Pod", NAMESPACE, "reader")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    (pod_dir,) = (state / "pods").glob(f"{NAMESPACE}_reader_*")
    volume = pod_dir / "volumes" / "config"
    assert (volume / "..data").is_symlink()
    assert os.readlink(volume / "value") == "..data/value"
    assert len([p for p in volume.iterdir() if p.is_dir() and not p.is_symlink()]) == 1
    await kube.delete("v1", "ConfigMap", NAMESPACE, "settings")
    await kube.delete("v1", "Pod", NAMESPACE, "reader")
    await kube.delete("v1", "Secret", NAMESPACE, "token")
