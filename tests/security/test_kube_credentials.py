"""A rotated ServiceAccount token is picked up without a restart by `paddock.kube.KubeClient`,
the one Kubernetes client of Paddock (the operator's, the runner's, the gateway's), against a
real kube-apiserver.

Two ServiceAccounts get real tokens from the apiserver (TokenRequest); only the second may
read a ConfigMap. The token file is laid out and rotated the way the kubelet does it (a new
directory behind the ``..data`` symlink); the request after the rotation carries the new
token, which the apiserver's answer shows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from paddock.kube import ApiError, Credentials, KubeClient
from paddock.testing.controlplane import ControlPlane

Read = Callable[[], Awaitable[None]]


class TokenVolume:
    """A projected ServiceAccount token volume as the kubelet writes it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0
        root.mkdir(mode=0o700)
        (root / "token").symlink_to("..data/token")

    def write(self, token: str) -> None:
        self.version += 1
        directory = self.root / f"..v{self.version}"
        directory.mkdir()
        (directory / "token").write_text(token)
        staging = self.root / "..data_tmp"
        staging.symlink_to(directory.name)
        os.replace(staging, self.root / "..data")


@pytest.fixture
async def cluster(control_plane: ControlPlane) -> AsyncIterator[dict[str, str]]:
    """A namespace, ServiceAccounts ``reader`` (may get the ConfigMap ``probe``) and
    ``nobody``, and a fresh token of each."""
    admin = KubeClient.from_environment(str(control_plane.kubeconfig))
    namespace = f"sa-rotation-{uuid.uuid4().hex[:8]}"
    try:
        await admin.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        await admin.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": namespace}}
        )  # fmt: skip
        base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        tokens = {}
        for name in ("reader", "nobody"):
            await admin.request("POST", base, json={"metadata": {"name": name}})
            reply = await admin.request(
                "POST",
                f"{base}/{name}/token",
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                      "spec": {"expirationSeconds": 3600}},
            )  # fmt: skip
            tokens[name] = reply["status"]["token"]
        role = {"metadata": {"name": "probe-reader"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["probe"]}
        ]}  # fmt: skip
        await admin.request("POST", f"{rbac}/roles", json=role)
        binding = {
            "metadata": {"name": "probe-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        }  # fmt: skip
        await admin.request("POST", f"{rbac}/rolebindings", json=binding)
        yield {"namespace": namespace, **tokens}
    finally:
        await admin.delete("v1", "Namespace", "", namespace)
        await admin.aclose()


def in_cluster(control_plane: ControlPlane, volume: TokenVolume) -> Credentials:
    """The credentials a pod would load, from the volume and the cluster CA."""
    return Credentials.in_cluster(
        token_file=volume.root / "token",
        ca_file=control_plane.ca_file,
        environ={
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(control_plane.port),
        },
    )


async def rotation_is_picked_up(volume: TokenVolume, tokens: dict[str, str], read: Read) -> None:
    volume.write(tokens["nobody"])
    with pytest.raises(ApiError, match=r"system:serviceaccount:.*:nobody"):
        await read()
    volume.write(tokens["reader"])  # the kubelet rotates the token
    await read()  # the very next request carries the new one
    volume.write(tokens["nobody"])
    with pytest.raises(ApiError, match=r"403|Forbidden"):
        await read()


async def test_the_client_rereads_a_rotated_token(
    control_plane: ControlPlane, cluster: dict[str, str], tmp_path: Path
) -> None:
    volume = TokenVolume(tmp_path / "sa")
    volume.write(cluster["nobody"])
    client = KubeClient.from_credentials(in_cluster(control_plane, volume))
    try:

        async def read() -> None:
            await client.get("v1", "ConfigMap", cluster["namespace"], "probe")

        await rotation_is_picked_up(volume, cluster, read)
    finally:
        await client.aclose()


async def test_a_token_rewritten_in_place_is_picked_up_too(
    control_plane: ControlPlane, cluster: dict[str, str], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(cluster["nobody"])
    credentials = Credentials.in_cluster(
        token_file=token,
        ca_file=control_plane.ca_file,
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(control_plane.port)},
    )  # fmt: skip
    assert await credentials.headers() == {"Authorization": f"Bearer {cluster['nobody']}"}
    token.write_text(cluster["reader"])
    assert await credentials.headers() == {"Authorization": f"Bearer {cluster['reader']}"}


async def test_a_kubeconfig_token_file_is_reread_too(
    control_plane: ControlPlane, cluster: dict[str, str], tmp_path: Path
) -> None:
    volume = TokenVolume(tmp_path / "sa")
    volume.write(cluster["nobody"])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": control_plane.url,
                            "certificate-authority": str(control_plane.ca_file),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"tokenFile": "sa/token"}}],  # relative
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    client = KubeClient.from_environment(str(kubeconfig))
    try:

        async def read() -> None:
            await client.get("v1", "ConfigMap", cluster["namespace"], "probe")

        await rotation_is_picked_up(volume, cluster, read)
    finally:
        await client.aclose()
