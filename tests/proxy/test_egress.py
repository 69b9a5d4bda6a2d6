"""The egress listener: authentication, per-Environment policy, address rules, git injection."""

from __future__ import annotations

import json
import subprocess
import time
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.proxy.support import (
    CLIENT_ENV,
    RawServer,
    Upstream,
    curl,
    proxy_authorization,
    raw_exchange,
    status_of,
)

from paddock.proxy import tokens
from paddock.testing.gitserver import GitServer
from paddock.testing.proxy import ProxyProcess, Secrets


@pytest.fixture(scope="module")
def garbage() -> Iterator[RawServer]:
    """An upstream that answers with something that is not HTTP."""
    with RawServer(b"SSH-2.0-OpenSSH\r\n\r\n") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    module_secrets: Secrets,
    module_upstream: Upstream,
    git_server: GitServer,
    garbage: RawServer,
) -> Iterator[ProxyProcess]:
    process = ProxyProcess(
        tmp_path_factory.mktemp("proxy"),
        module_secrets,
        upstream=module_upstream.url,
        environments={
            "locked": {"mode": "none"},
            "limited": {"mode": "limited", "allowed_domains": ["localhost", "*.allowed.test"]},
            "open": {"mode": "open"},
        },
        credentials=[
            {
                "host": "localhost",
                "secret_file": str(module_secrets.path("git_token")),
                "scheme": "basic",
            }
        ],
        address_exceptions=[
            f"127.0.0.1:{module_upstream.port}",
            f"127.0.0.1:{git_server.port}",
            f"127.0.0.1:{garbage.port}",
        ],
        upstream_scheme_overrides={
            f"localhost:{git_server.port}": "http",
            f"localhost:{module_upstream.port}": "http",
        },
    )
    process.start()
    yield process
    process.stop()


def get(proxy: ProxyProcess, session: str, token: str, url: str) -> tuple[int, str]:
    """Status and body of a plain-HTTP GET through the proxy."""
    result = curl("-x", proxy.proxy_url(session, token), "-w", "\n%{http_code}", url)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def absolute_get(proxy: ProxyProcess, authorization: str, target: str) -> bytes:
    """A raw absolute-form GET, so that no client normalizes the target first."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {authorization}\r\n\r\n"
    return raw_exchange(proxy.egress_port, request.encode())


def connect(proxy: ProxyProcess, authorization: str, authority: str) -> bytes:
    request = f"CONNECT {authority} HTTP/1.1\r\nProxy-Authorization: {authorization}\r\n\r\n"
    return raw_exchange(proxy.egress_port, request.encode())


def refusal(response: bytes) -> dict[str, str]:
    return dict(json.loads(response.partition(b"\r\n\r\n")[2])["error"])


class TestAuthentication:
    def test_missing_credentials_get_407_with_a_challenge(self, proxy: ProxyProcess) -> None:
        response = raw_exchange(
            proxy.egress_port, b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        assert status_of(response) == 407
        assert b'Proxy-Authenticate: Basic realm="paddock"' in response

    @pytest.mark.parametrize(
        ("session", "token_of"),
        [
            ("s-bad", lambda good: "not-a-token"),
            ("s-bad", lambda good: good[:-4] + "AAAA"),  # forged signature
            ("someone-else", lambda good: good),  # a token is bound to its session id
        ],
    )
    def test_bad_tokens_get_407(
        self, proxy: ProxyProcess, session: str, token_of: Callable[[str], str]
    ) -> None:
        good = proxy.mint("s-bad", "open")
        response = absolute_get(
            proxy, proxy_authorization(session, token_of(good)), "http://localhost/"
        )
        assert status_of(response) == 407

    def test_a_token_signed_with_another_key_gets_407(self, proxy: ProxyProcess) -> None:
        forged = tokens.mint(b"k" * 32, "s-forged", "open", issued_at=int(time.time()))
        response = absolute_get(proxy, proxy_authorization("s-forged", forged), "http://localhost/")
        assert status_of(response) == 407
        assert refusal(response)["message"] == "token signature does not match"

    def test_curl_with_a_valid_token_passes(
        self, proxy: ProxyProcess, module_upstream: Upstream
    ) -> None:
        token = proxy.mint("s-ok", "limited")
        code, body = get(proxy, "s-ok", token, f"http://localhost:{module_upstream.port}/hello")
        assert code == 200, body
        assert json.loads(body) == {"ok": True, "bytes": 0}
        # The proxy's credentials never travel on.
        assert "proxy-authorization" not in module_upstream.seen[-1].headers


class TestEnvironmentPolicy:
    def test_a_host_outside_the_allowlist_is_refused_naming_the_rule(
        self, proxy: ProxyProcess
    ) -> None:
        token = proxy.mint("s-limited", "limited")
        code, body = get(proxy, "s-limited", token, "http://evil.example/")
        assert code == 403
        error = json.loads(body)["error"]
        assert error["rule"] == "allowlist"
        assert (
            error["message"]
            == 'host "evil.example" is not in the allowlist of environment "limited"'
        )

    def test_wildcards_match_subdomains_only(self, proxy: ProxyProcess) -> None:
        authorization = proxy_authorization("s-wild", proxy.mint("s-wild", "limited"))
        # Allowed by "*.allowed.test", then refused because the name does not resolve.
        assert (
            refusal(absolute_get(proxy, authorization, "http://a.b.allowed.test/"))["rule"] == "dns"
        )
        assert (
            refusal(absolute_get(proxy, authorization, "http://allowed.test/"))["rule"]
            == "allowlist"
        )
        assert (
            refusal(absolute_get(proxy, authorization, "http://xallowed.test/"))["rule"]
            == "allowlist"
        )

    def test_mode_none_refuses_everything(
        self, proxy: ProxyProcess, module_upstream: Upstream
    ) -> None:
        token = proxy.mint("s-locked", "locked")
        code, body = get(proxy, "s-locked", token, f"http://localhost:{module_upstream.port}/")
        assert code == 403
        assert json.loads(body)["error"]["rule"] == "mode-none"

    def test_a_token_carries_exactly_its_own_environment(
        self, proxy: ProxyProcess, module_upstream: Upstream
    ) -> None:
        url = f"http://localhost:{module_upstream.port}/"
        locked = proxy.mint("s-env", "locked")
        assert get(proxy, "s-env", proxy.mint("s-env", "open"), url)[0] == 200
        assert get(proxy, "s-env", locked, url)[0] == 403
        # Rewriting the environment inside the token breaks its signature.
        version, payload, mac = locked.split(".")
        claims = json.loads(urlsafe_b64decode(payload + "=="))
        claims["env"] = "open"
        tampered = urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        assert get(proxy, "s-env", f"{version}.{tampered}.{mac}", url)[0] == 407

    def test_unknown_environments_get_no_token(self, proxy: ProxyProcess) -> None:
        with pytest.raises(Exception, match="422"):
            proxy.mint("s-x", "nonexistent")


class TestAddressRules:
    """In `open` mode only the address rules stand between a sandbox and the pod network."""

    @pytest.fixture
    def authorization(self, proxy: ProxyProcess) -> str:
        return proxy_authorization("s-open", proxy.mint("s-open", "open"))

    @pytest.mark.parametrize(
        ("target", "rule"),
        [
            ("http://localhost:9/", "address:loopback"),  # a name that resolves to 127.0.0.1
            ("http://127.0.0.1:9/", "address:loopback"),
            ("http://127.1:9/", "address:loopback"),  # inet_aton spellings resolve too
            ("http://2130706433:9/", "address:loopback"),
            ("http://0x7f000001:9/", "address:loopback"),
            ("http://[::1]:9/", "address:loopback"),
            ("http://[::ffff:127.0.0.1]:9/", "address:loopback"),
            ("http://[::ffff:7f00:1]:9/", "address:loopback"),
            ("http://LOCALHOST.:9/", "address:loopback"),
            ("http://10.1.2.3/", "address:private"),
            ("http://172.16.0.1/", "address:private"),
            ("http://192.168.1.1/", "address:private"),
            ("http://[fd00::1]/", "address:private"),
            ("http://169.254.169.254/latest/meta-data/", "address:metadata"),
            ("http://[::ffff:169.254.169.254]/", "address:metadata"),
            ("http://[fe80::1]/", "address:link-local"),
            ("http://100.64.0.1/", "address:cgnat"),
            ("http://0.0.0.0:9/", "address:unspecified"),
            ("http://224.0.0.1/", "address:multicast"),
        ],
    )
    def test_internal_destinations_are_refused(
        self, proxy: ProxyProcess, authorization: str, target: str, rule: str
    ) -> None:
        response = absolute_get(proxy, authorization, target)
        assert status_of(response) == 403, response
        assert refusal(response)["rule"] == rule

    def test_the_message_names_the_resolved_address(
        self, proxy: ProxyProcess, authorization: str
    ) -> None:
        message = refusal(absolute_get(proxy, authorization, "http://localhost:9/"))["message"]
        assert (
            message
            == 'host "localhost" resolves to 127.0.0.1, a loopback address; egress only reaches public addresses'
        )

    @pytest.mark.parametrize("which", ["api", "egress", "admin", "redis", "metadata", "loopback"])
    def test_connect_to_internal_ports_is_refused(
        self, proxy: ProxyProcess, authorization: str, which: str
    ) -> None:
        authority, rule = {
            "api": (f"127.0.0.1:{proxy.api_port}", "proxy-port"),
            "egress": (f"127.0.0.1:{proxy.egress_port}", "proxy-port"),
            "admin": (f"localhost:{proxy.admin_port}", "proxy-port"),
            "redis": ("127.0.0.1:6379", "blocked-port"),
            "metadata": ("169.254.169.254:80", "address:metadata"),
            "loopback": ("127.0.0.1:22", "address:loopback"),
        }[which]
        response = connect(proxy, authorization, authority)
        assert status_of(response) == 403
        assert refusal(response)["rule"] == rule
        assert f"X-Paddock-Rule: {rule}".encode() in response

    def test_curl_connect_to_loopback_fails(self, proxy: ProxyProcess) -> None:
        token = proxy.mint("s-curl", "open")
        result = curl(
            "-p", "-x", proxy.proxy_url("s-curl", token), "-w", "%{http_connect}",
            f"http://127.0.0.1:{proxy.admin_port}/healthz",
        )  # fmt: skip
        assert result.returncode != 0
        assert result.stdout.endswith("403")

    def test_an_excepted_address_is_reachable_by_connect(
        self, proxy: ProxyProcess, authorization: str, module_upstream: Upstream
    ) -> None:
        request = (
            f"CONNECT 127.0.0.1:{module_upstream.port} HTTP/1.1\r\nProxy-Authorization: {authorization}\r\n\r\n"
            f"GET /tunneled HTTP/1.1\r\nHost: x\r\nAuthorization: mine\r\nConnection: close\r\n\r\n"
        )
        response = raw_exchange(proxy.egress_port, request.encode())
        assert response.startswith(b"HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK")
        # Inside a tunnel the proxy neither sees nor changes anything.
        assert module_upstream.seen[-1].headers["authorization"] == "mine"
        entry = proxy.last_entry(session="s-open", method="CONNECT", decision="allow")
        assert entry["bytes_up"] > 0
        assert entry["bytes_down"] > 0
        assert entry["injected"] is None


class TestRequests:
    def test_chunked_bodies_pass_intact(
        self, proxy: ProxyProcess, module_upstream: Upstream, tmp_path: Path
    ) -> None:
        token = proxy.mint("s-body", "open")
        payload = tmp_path / "payload"
        payload.write_bytes(bytes(range(256)) * 4096)
        result = curl(
            "-x", proxy.proxy_url("s-body", token), "-H", "Transfer-Encoding: chunked",
            "--data-binary", f"@{payload}", f"http://localhost:{module_upstream.port}/upload",
        )  # fmt: skip
        assert json.loads(result.stdout) == {"ok": True, "bytes": 256 * 4096}
        assert module_upstream.seen[-1].body == payload.read_bytes()
        assert proxy.last_entry(session="s-body")["bytes_up"] == 256 * 4096

    def test_expect_continue_is_answered_by_the_proxy(
        self, proxy: ProxyProcess, module_upstream: Upstream, tmp_path: Path
    ) -> None:
        token = proxy.mint("s-expect", "open")
        payload = tmp_path / "payload"
        payload.write_bytes(b"x" * 3_000_000)  # curl sends Expect: 100-continue for this
        result = curl(
            "-x", proxy.proxy_url("s-expect", token), "--expect100-timeout", "10",
            "--data-binary", f"@{payload}", f"http://localhost:{module_upstream.port}/upload",
        )  # fmt: skip
        assert json.loads(result.stdout) == {"ok": True, "bytes": 3_000_000}
        assert "expect" not in module_upstream.seen[-1].headers

    def test_an_invalid_upstream_response_is_a_502(
        self, proxy: ProxyProcess, garbage: RawServer
    ) -> None:
        authorization = proxy_authorization("s-garbage", proxy.mint("s-garbage", "open"))
        response = absolute_get(proxy, authorization, f"http://localhost:{garbage.port}/")
        assert status_of(response) == 502
        assert refusal(response)["message"] == "the upstream sent no valid response"

    @pytest.mark.parametrize(
        "extra",
        [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # smuggling ambiguity
            "Transfer-Encoding: gzip\r\n",
            "Content-Length: 5, 6\r\n",
            "Bad Header: x\r\n",
            " folded: x\r\n",
        ],
    )
    def test_ambiguous_requests_are_refused(self, proxy: ProxyProcess, extra: str) -> None:
        authorization = proxy_authorization("s-bad-req", proxy.mint("s-bad-req", "open"))
        request = f"POST http://localhost/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {authorization}\r\n{extra}\r\nhello"
        assert status_of(raw_exchange(proxy.egress_port, request.encode())) in (400, 501)

    def test_userinfo_in_the_target_is_refused(self, proxy: ProxyProcess) -> None:
        authorization = proxy_authorization("s-ui", proxy.mint("s-ui", "open"))
        response = absolute_get(proxy, authorization, "http://localhost@evil.example/")
        assert status_of(response) == 400


class TestGitPath:
    def git(
        self, proxy: ProxyProcess, token: str, git_server: GitServer, *args: str, cwd: Path
    ) -> subprocess.CompletedProcess[str]:
        """git configured as the sandbox configures it: proxy and insteadOf rewrite."""
        host = f"localhost:{git_server.port}"
        config = [
            "-c", f"http.proxy={proxy.proxy_url('s-git', token)}",
            "-c", f"url.http://127.0.0.1:{proxy.egress_port}/git/{host}/.insteadOf=https://{host}/",
        ]  # fmt: skip
        return subprocess.run(
            ["git", *config, *args], cwd=cwd, env={**CLIENT_ENV, "GIT_TERMINAL_PROMPT": "0"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def test_git_clone_gets_the_token_added_upstream(
        self, proxy: ProxyProcess, git_server: GitServer, tmp_path: Path
    ) -> None:
        token = proxy.mint("s-git", "limited")
        url = f"https://localhost:{git_server.port}/repo.git"
        result = self.git(proxy, token, git_server, "clone", "-q", url, "clone", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "clone" / "README").read_text() == "hello from the git host\n"
        assert git_server.authorized >= 2
        assert git_server.refused == 0
        entries = [
            e for e in proxy.audit() if e["session"] == "s-git" and e["listener"] == "egress"
        ]
        assert entries
        assert all(e["injected"] == "localhost" for e in entries)
        assert {e["host"] for e in entries} == {"localhost"}

    def test_the_git_path_still_obeys_the_environment(
        self, proxy: ProxyProcess, git_server: GitServer, tmp_path: Path
    ) -> None:
        token = proxy.mint("s-git", "locked")
        url = f"https://localhost:{git_server.port}/repo.git"
        result = self.git(proxy, token, git_server, "ls-remote", url, cwd=tmp_path)
        assert result.returncode != 0
        assert "403" in result.stderr

    def test_origin_form_git_requests_replace_the_callers_authorization(
        self, proxy: ProxyProcess, module_upstream: Upstream
    ) -> None:
        authorization = proxy_authorization("s-origin", proxy.mint("s-origin", "limited"))
        request = (
            f"GET /git/localhost:{module_upstream.port}/org/repo/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: proxy\r\n"
            f"Proxy-Authorization: {authorization}\r\nAuthorization: Bearer sandbox-made-this-up\r\n\r\n"
        )
        response = raw_exchange(proxy.egress_port, request.encode())
        assert status_of(response) == 200
        seen = module_upstream.seen[-1]
        assert seen.path == "/org/repo/info/refs?service=git-upload-pack"
        assert seen.headers["host"] == f"localhost:{module_upstream.port}"
        assert seen.headers["authorization"].startswith("Basic ")
        assert "proxy-authorization" not in seen.headers

    def test_plain_forwarding_never_injects(
        self, proxy: ProxyProcess, module_upstream: Upstream
    ) -> None:
        token = proxy.mint("s-plain", "limited")
        assert (
            get(proxy, "s-plain", token, f"http://localhost:{module_upstream.port}/plain")[0] == 200
        )
        assert "authorization" not in module_upstream.seen[-1].headers
