"""The audit trail: one JSON line per request, and never a secret in anything the proxy writes."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from tests.proxy.support import Upstream, curl, proxy_authorization, raw_exchange

from paddock.testing.gitserver import GitServer
from paddock.testing.proxy import ProxyProcess, Secrets


def test_the_logs_hold_no_secret(
    tmp_path: Path, module_secrets: Secrets, upstream: Upstream, git_server: GitServer
) -> None:
    secrets = module_secrets
    proxy = ProxyProcess(
        tmp_path,
        secrets,
        upstream=upstream.url,
        environments={"default": {"mode": "limited", "allowed_domains": ["localhost"]}},
        credentials=[
            {"host": "localhost", "secret_file": str(secrets.path("git_token")), "scheme": "basic"}
        ],
        address_exceptions=[f"127.0.0.1:{upstream.port}", f"127.0.0.1:{git_server.port}"],
        upstream_scheme_overrides={f"localhost:{git_server.port}": "http"},
    )
    proxy.start()
    try:
        token = proxy.mint("sesn_audit", "default")
        other = proxy.mint("sesn_other", "default")
        via = proxy.proxy_url("sesn_audit", token)
        # The API with the key, egress allowed and refused, a wrong session's token, the git
        # path with injection, a tunnel, and a malformed request that echoes nothing back.
        httpx.post(
            f"{proxy.api_url}/v1/messages", json={"x": 1}, headers={"x-api-key": secrets.api_key}
        )
        curl("-x", via, f"http://localhost:{upstream.port}/allowed")
        curl("-x", via, "http://evil.example/")
        curl("-x", proxy.proxy_url("sesn_audit", other), f"http://localhost:{upstream.port}/")
        curl(
            "-x",
            via,
            f"http://127.0.0.1:{proxy.egress_port}/git/localhost:{git_server.port}/repo.git/info/refs?service=git-upload-pack",
        )
        curl("-p", "-x", via, f"http://localhost:{upstream.port}/tunneled")
        raw_exchange(
            proxy.egress_port,
            f"GET / HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode(),
        )
        assert git_server.authorized >= 1
        proxy.last_entry(method="CONNECT")  # a tunnel is audited once both directions ended

        logs = proxy.logs()
        entries = proxy.audit()  # every line of stdout is one JSON entry
        assert {e["listener"] for e in entries} == {"admin", "api", "egress"}
        assert any(e["injected"] == "localhost" for e in entries)
        for entry in entries:
            assert set(entry) == {
                "ts", "listener", "method", "host", "port", "session", "decision", "rule",
                "status", "bytes_up", "bytes_down", "injected",
            }  # fmt: skip
        forbidden = {
            **secrets.values(),
            "egress token": token,
            "other token": other,
            "token signature": token.rsplit(".", 1)[1],
            "proxy authorization": proxy_authorization("sesn_audit", token).split()[1],
            "api key, base64": base64.b64encode(secrets.api_key.encode()).decode(),
        }
        for name, value in forbidden.items():
            if value in logs:  # pytest.fail: no assertion rewrite that would print the value
                pytest.fail(f"the {name} appears in the proxy's logs")
    finally:
        proxy.stop()
