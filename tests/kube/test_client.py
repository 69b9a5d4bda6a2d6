"""`paddock.kube.KubeClient` against a real kube-apiserver: an apiserver shedding load (429)
is waited for as its Retry-After says, an apiserver that cannot be reached is an `ApiError`
with status 0, watches deliver events. Token rotation: tests/security/test_kube_credentials.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paddock.kube import ApiError, Credentials, KubeClient, retry_after
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import free_port

BURST = 3


@pytest.fixture(scope="module")
def busy_plane() -> Iterator[ControlPlane]:
    """An apiserver that serves one read at a time and answers 429 (Retry-After: 1) to the
    others: the max-in-flight limit, without priority and fairness queueing."""
    with ControlPlane(
        extra_args=(
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=1",
            "--max-mutating-requests-inflight=1",
        )
    ) as plane:
        yield plane


@pytest.fixture
async def reader(busy_plane: ControlPlane, tmp_path: Path) -> Credentials:
    """A ServiceAccount's credentials (the admin, in system:masters, is never refused) that
    may get the ConfigMap ``probe`` of namespace ``default``."""
    admin = KubeClient.from_environment(str(busy_plane.kubeconfig))
    name = f"reader-{uuid.uuid4().hex[:8]}"
    base = "/api/v1/namespaces/default"
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    try:
        await admin.find("v1", "ConfigMap", "default", "probe") or await admin.create(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": "default"}}
        )  # fmt: skip
        await admin.request("POST", f"{base}/serviceaccounts", json={"metadata": {"name": name}})
        token = await admin.request(
            "POST",
            f"{base}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        role = {"metadata": {"name": name}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["probe"]}
        ]}  # fmt: skip
        await admin.request("POST", f"{rbac}/roles", json=role)
        binding = {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
        }  # fmt: skip
        await admin.request("POST", f"{rbac}/rolebindings", json=binding)
    finally:
        await admin.aclose()
    token_file = tmp_path / "token"
    token_file.write_text(token["status"]["token"])
    context = ssl.create_default_context(cafile=str(busy_plane.ca_file))
    return Credentials(busy_plane.url, context, token_file=token_file)


async def test_a_429_is_retried_after_its_retry_after(
    busy_plane: ControlPlane, reader: Credentials
) -> None:
    probe = "/api/v1/namespaces/default/configmaps/probe"
    headers = await reader.headers()
    # Without retries, a burst of reads is partly refused, with the wait to respect.
    async with httpx.AsyncClient(base_url=busy_plane.url, verify=reader.ssl_context) as raw:
        for _ in range(20):
            replies = await asyncio.gather(*(raw.get(probe, headers=headers) for _ in range(BURST)))
            refused = [r for r in replies if r.status_code == 429]
            if refused:
                break
        assert refused, "the apiserver never refused a read"
        assert refused[0].headers["Retry-After"] == "1"

    kube = KubeClient.from_credentials(reader, connections=BURST)
    try:
        for _ in range(20):
            started = time.monotonic()
            found = await asyncio.gather(
                *(kube.get("v1", "ConfigMap", "default", "probe") for _ in range(BURST))
            )
            elapsed = time.monotonic() - started
            # Every read succeeded; the refused ones after the second the apiserver asked.
            assert [f["metadata"]["name"] for f in found] == ["probe"] * BURST
            if elapsed >= 1:
                break
        assert elapsed >= 1, "no read of the burst was refused"
    finally:
        await kube.aclose()


async def test_an_unreachable_apiserver_is_an_api_error_with_status_0() -> None:
    kube = KubeClient.from_credentials(
        Credentials(f"https://127.0.0.1:{free_port()}", ssl.create_default_context())
    )
    try:
        with pytest.raises(ApiError) as raised:
            await kube.get("v1", "ConfigMap", "default", "probe")
        assert raised.value.status == 0
        assert raised.value.reason == "Unreachable"
        with pytest.raises(ApiError) as raised:
            async for _ in kube.watch_events("/api/v1/configmaps", {"watch": "1"}):
                pass
        assert raised.value.status == 0
    finally:
        await kube.aclose()


async def test_an_error_answer_carries_the_status_reason_and_message(
    control_plane: ControlPlane,
) -> None:
    kube = KubeClient.from_environment(str(control_plane.kubeconfig))
    try:
        with pytest.raises(ApiError) as raised:
            await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad Name", "namespace": "default"}})  # fmt: skip
        assert raised.value.status == 422
        assert raised.value.reason == "Invalid"
        assert "Bad Name" in raised.value.message
    finally:
        await kube.aclose()


async def test_a_watch_sees_changes_and_objects_larger_than_aiohttps_line_limit(
    control_plane: ControlPlane,
) -> None:
    kube = KubeClient.from_environment(str(control_plane.kubeconfig))
    name = f"big-{uuid.uuid4().hex[:8]}"
    big = "x" * 300_000  # aiohttp's readline refuses lines over 128 KiB
    meta = {"name": name, "namespace": "default", "labels": {"test": name}}
    await kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta})
    events = kube.watch("v1", "ConfigMap", "default", labels={"test": name})
    try:
        what, obj = await asyncio.wait_for(anext(events), 30)  # from the list
        assert (what, obj["metadata"]["name"]) == ("ADDED", name)
        await kube.patch("v1", "ConfigMap", "default", name, {"data": {"big": big}})
        what, obj = await asyncio.wait_for(anext(events), 30)  # from the watch
        assert (what, obj["data"]["big"]) == ("MODIFIED", big)
        await kube.delete("v1", "ConfigMap", "default", name)
        what, obj = await asyncio.wait_for(anext(events), 30)
        assert (what, obj["metadata"]["name"]) == ("DELETED", name)
    finally:
        await events.aclose()
        await kube.delete("v1", "ConfigMap", "default", name)
        await kube.aclose()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("1") == 1.0
    assert retry_after(" 2.5 ") == 2.5
    assert retry_after("-3") == 0.0
    now = time.time()
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(
        30, abs=1
    )
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "Mon, 99 Foo 2026 00:00:00 GMT"):
        assert retry_after(unreadable) is None
