"""The proxy process: startup errors, config reload, admin endpoints."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.proxy.support import Upstream, curl

from paddock.testing.ports import wait_until
from paddock.testing.proxy import PYTHON, ProxyProcess, Secrets


@pytest.fixture
def proxy(tmp_path: Path, secret_files: Secrets, upstream: Upstream) -> Iterator[ProxyProcess]:
    process = ProxyProcess(
        tmp_path,
        secret_files,
        upstream=upstream.url,
        environments={"default": {"mode": "none"}},
        address_exceptions=[f"127.0.0.1:{upstream.port}"],
    )
    process.start()
    yield process
    process.stop()


def test_an_invalid_config_stops_startup_with_every_problem_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "api_key_file: /k\ntoken_key_file: /t\nlisteners: {api: {host: 0.0.0.0, port: 1}}\n"
        "environments: {default: {mode: sometimes}}\naddress_exceptions: ['169.254.169.254:80']\n"
    )
    result = subprocess.run(
        [PYTHON, "-m", "paddock.proxy", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{config}: listeners: api must listen on a loopback address" in result.stderr
    assert (
        f"{config}: environments.default.mode: Input should be 'none', 'limited' or 'open'"
        in result.stderr
    )
    assert f"{config}: address_exceptions.0: 169.254.169.254:80 is metadata" in result.stderr


def test_a_changed_config_applies_without_restart(proxy: ProxyProcess, upstream: Upstream) -> None:
    token = proxy.mint("sesn_reload", "default")
    url = f"http://localhost:{upstream.port}/"

    def status() -> str:
        return curl(
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            proxy.proxy_url("sesn_reload", token),
            url,
        ).stdout

    assert status() == "403"
    proxy.config["environments"]["default"] = {"mode": "open"}
    proxy.write_config()
    wait_until(lambda: status() == "200", timeout=10, what="reloaded config")


def test_a_broken_config_keeps_the_last_good_one(proxy: ProxyProcess) -> None:
    proxy.config_path.write_text("environments: [this is not a mapping\n")
    wait_until(lambda: "config not reloaded" in proxy.logs(), timeout=10, what="reload error")
    assert httpx.get(f"{proxy.admin_url}/readyz").status_code == 200
    assert proxy.mint("sesn_still", "default")


def test_changed_listeners_are_refused_until_restart(proxy: ProxyProcess) -> None:
    proxy.config["listeners"]["admin"]["port"] += 1
    proxy.config["environments"]["added"] = {"mode": "open"}
    proxy.write_config()
    wait_until(lambda: "listeners changed" in proxy.logs(), timeout=10, what="reload refusal")
    with pytest.raises(httpx.HTTPStatusError):
        proxy.mint("sesn_x", "added")  # nothing of the refused file applies


class TestAdmin:
    def test_tokens_are_minted_only_for_valid_requests(self, proxy: ProxyProcess) -> None:
        url = f"{proxy.admin_url}/v1/session-tokens"
        ok = httpx.post(url, json={"session_id": "sesn_1", "environment": "default"})
        assert ok.status_code == 200
        assert ok.json()["token"].startswith("pdk1.")
        assert (
            httpx.post(url, json={"session_id": "a:b", "environment": "default"}).status_code == 400
        )
        assert httpx.post(url, content=b"{").status_code == 400
        unknown = httpx.post(url, json={"session_id": "sesn_1", "environment": "other"})
        assert unknown.status_code == 422
        assert (
            unknown.json()["error"]["message"]
            == 'environment "other" is not configured on this proxy'
        )

    def test_a_short_token_key_makes_the_proxy_unready(
        self, proxy: ProxyProcess, secret_files: Secrets
    ) -> None:
        secret_files.rotate(token_key="too-short")
        ready = httpx.get(f"{proxy.admin_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == [
            f"{secret_files.path('token_key')}: shorter than 32 bytes"
        ]
        reply = httpx.post(
            f"{proxy.admin_url}/v1/session-tokens",
            json={"session_id": "sesn_1", "environment": "default"},
        )
        assert reply.status_code == 503

    def test_rotating_the_token_key_revokes_issued_tokens(
        self, proxy: ProxyProcess, secret_files: Secrets, upstream: Upstream
    ) -> None:
        token = proxy.mint("sesn_rot", "default")
        secret_files.rotate(token_key="9" * 64)
        result = curl(
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            proxy.proxy_url("sesn_rot", token),
            "http://x/",
        )
        assert result.stdout == "407"

    def test_metrics_count_requests_by_decision(self, proxy: ProxyProcess) -> None:
        proxy.mint("sesn_m", "default")
        curl("-x", proxy.proxy_url("sesn_m", "bad"), "http://x/")
        text = httpx.get(f"{proxy.admin_url}/metrics").text
        assert 'paddock_proxy_requests_total{listener="admin",decision="allow"} 1' in text
        assert 'paddock_proxy_requests_total{listener="egress",decision="deny"} 1' in text

    def test_admin_is_not_on_the_egress_port(self, proxy: ProxyProcess) -> None:
        reply = httpx.get(f"http://127.0.0.1:{proxy.egress_port}/healthz")
        assert reply.status_code == 400
