"""The Claude API reverse proxy: key injection, rotation without restart, unbuffered streams."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.proxy.support import Upstream

from paddock.testing.ports import free_port
from paddock.testing.proxy import ProxyProcess, Secrets


@pytest.fixture
def proxy(tmp_path: Path, secret_files: Secrets, upstream: Upstream) -> Iterator[ProxyProcess]:
    process = ProxyProcess(tmp_path, secret_files, upstream=upstream.url)
    process.start()
    yield process
    process.stop()


def test_the_key_arrives_upstream_and_caller_credentials_do_not(
    proxy: ProxyProcess, upstream: Upstream, secret_files: Secrets
) -> None:
    reply = httpx.post(
        f"{proxy.api_url}/v1/messages?beta=true",
        json={"model": "claude-test", "max_tokens": 1},
        headers={
            "x-api-key": "guessed-by-the-harness",
            "authorization": "Bearer x",
            "anthropic-version": "2023-06-01",
        },
    )
    assert reply.status_code == 200
    seen = upstream.seen[-1]
    assert (seen.method, seen.path) == ("POST", "/v1/messages?beta=true")
    assert seen.headers["x-api-key"] == secret_files.api_key
    assert "authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body == b'{"model":"claude-test","max_tokens":1}'


def test_a_rotated_key_is_used_without_restart(
    proxy: ProxyProcess, upstream: Upstream, secret_files: Secrets
) -> None:
    httpx.get(f"{proxy.api_url}/v1/models")
    assert upstream.seen[-1].headers["x-api-key"] == secret_files.api_key
    secret_files.rotate(api_key="sk-ant-rotated-" + "1" * 16)  # the kubelet's symlink swap
    httpx.get(f"{proxy.api_url}/v1/models")
    assert upstream.seen[-1].headers["x-api-key"] == "sk-ant-rotated-" + "1" * 16
    # A same-size rewrite in place, within the filesystem's timestamp granularity.
    (secret_files.dir / "..data" / "api_key").write_text("sk-ant-rotated-" + "2" * 16)
    httpx.get(f"{proxy.api_url}/v1/models")
    assert upstream.seen[-1].headers["x-api-key"] == "sk-ant-rotated-" + "2" * 16
    assert proxy.process is not None
    assert proxy.process.poll() is None


def test_server_sent_events_pass_unbuffered(proxy: ProxyProcess, upstream: Upstream) -> None:
    started = time.monotonic()
    with httpx.stream("POST", f"{proxy.api_url}/sse", json={}, timeout=5) as reply:
        events = (line for line in reply.iter_lines() if line.startswith("event:"))
        assert next(events) == "event: first"
        # The upstream holds the second event until this point: the first one came through
        # on its own, not in a buffer flushed at the end.
        assert not upstream.release.is_set()
        upstream.release.set()
        assert list(events) == ["event: second"]
    assert time.monotonic() - started < 5


def test_without_a_key_requests_fail_in_the_api_error_shape(
    proxy: ProxyProcess, secret_files: Secrets
) -> None:
    (secret_files.dir / "..data" / "api_key").unlink()
    reply = httpx.post(f"{proxy.api_url}/v1/messages", json={})
    assert reply.status_code == 503
    assert reply.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "credential proxy: the API key is unavailable"},
    }
    ready = httpx.get(f"{proxy.admin_url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["problems"] == [
        f"{secret_files.path('api_key')}: No such file or directory"
    ]


def test_an_unreachable_upstream_is_a_502(tmp_path: Path, secret_files: Secrets) -> None:
    process = ProxyProcess(tmp_path, secret_files, upstream=f"http://127.0.0.1:{free_port()}")
    process.start()
    try:
        reply = httpx.get(f"{process.api_url}/v1/models")
        assert reply.status_code == 502
        assert reply.json()["error"]["type"] == "api_error"
        entry = process.last_entry(listener="api")
        assert (entry["decision"], entry["status"]) == ("allow", 502)
    finally:
        process.stop()


def test_each_request_is_audited(proxy: ProxyProcess, upstream: Upstream) -> None:
    httpx.get(f"{proxy.api_url}/v1/models")
    entry = proxy.last_entry(listener="api")
    assert entry["method"] == "GET"
    assert (entry["host"], entry["port"]) == ("127.0.0.1", upstream.port)
    assert (entry["decision"], entry["rule"], entry["status"]) == ("allow", "api", 200)
    assert entry["bytes_down"] > 0


def test_a_key_that_would_add_headers_is_refused(
    proxy: ProxyProcess, upstream: Upstream, secret_files: Secrets
) -> None:
    secret_files.rotate(api_key="sk-ant-x\r\nx-injected: yes")
    assert httpx.get(f"{proxy.api_url}/v1/models").status_code == 503
    assert upstream.seen == []
    assert httpx.get(f"{proxy.admin_url}/readyz").json()["problems"] == [
        f"{secret_files.path('api_key')}: not a single token of visible ASCII"
    ]


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "PROPFIND", "MKCOL"])
def test_methods_outside_the_api_get_405_and_never_the_key(
    proxy: ProxyProcess, upstream: Upstream, secret_files: Secrets, method: str
) -> None:
    before = len(upstream.seen)
    reply = httpx.request(method, f"{proxy.api_url}/v1/messages")
    assert reply.status_code == 405
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert secret_files.api_key not in reply.text
    assert len(upstream.seen) == before


def test_a_method_the_http_parser_does_not_know_is_never_forwarded(
    proxy: ProxyProcess, upstream: Upstream, secret_files: Secrets
) -> None:
    before = len(upstream.seen)
    reply = httpx.request("TRACK", f"{proxy.api_url}/v1/messages")
    assert reply.status_code == 400  # aiohttp's parser refuses it before the proxy sees it
    assert secret_files.api_key not in reply.text
    assert len(upstream.seen) == before
