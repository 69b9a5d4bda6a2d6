"""Attacks on the credential proxy's egress listener, each through the real proxy process
from a raw socket, each asserting what the sandbox sees: the refusal, and never a secret.

The credential host ``localhost`` is the echo host: it returns every header it receives, so a
credential the proxy wrongly adds would be read back by the sandbox.
"""

from __future__ import annotations

import json

import pytest
from tests.proxy.support import proxy_authorization, raw_exchange, status_of
from tests.security.conftest import HOSTS_NAMES, EchoHost, hosts_name
from tests.security.registries import ENTRIES, REPORTED_BYPASSES, Entry

from paddock.testing.proxy import ProxyProcess, Secrets

GIT_REFS = "/repo.git/info/refs?service=git-upload-pack"


def send(proxy: ProxyProcess, environment: str, line: str, extra: str = "") -> bytes:
    """One request ``line`` (``METHOD target``) with a valid egress token; the raw answer."""
    authorization = proxy_authorization("s-attack", proxy.mint("s-attack", environment))
    request = (
        f"{line} HTTP/1.1\r\nHost: proxy\r\nProxy-Authorization: {authorization}\r\n"
        f"Content-Length: 0\r\n{extra}\r\n"
    )
    return raw_exchange(proxy.egress_port, request.encode("latin-1"))


def rule(response: bytes) -> str:
    return str(json.loads(response.partition(b"\r\n\r\n")[2])["error"]["rule"])


def assert_no_secret(response: bytes, secrets_: Secrets) -> None:
    for name, value in secrets_.values().items():
        assert value.encode() not in response, f"{name} came back to the sandbox"


def upstream_authorization(echo: EchoHost, before: int) -> list[str]:
    """The ``Authorization`` values the echo host received since ``before`` requests."""
    return [v for seen in echo.seen[before:] for k, v in seen["headers"] if k.lower() == "authorization"]  # type: ignore[union-attr]  # fmt: skip


class TestCredentialsOnlyOnGitSmartHttp:
    def test_git_ref_discovery_gets_the_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"GET /git/localhost:{echo.port}{GIT_REFS}")
        assert status_of(response) == 200
        basic = secrets_.values()["git_token_basic"]
        assert upstream_authorization(echo, before) == [f"Basic {basic}"]
        assert proxy.last_entry(session="s-attack")["injected"] == "localhost"

    @pytest.mark.parametrize("service", ["git-upload-pack", "git-receive-pack"])
    def test_git_service_posts_get_the_credential(
        self, proxy: ProxyProcess, echo: EchoHost, service: str
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"POST /git/localhost:{echo.port}/repo.git/{service}")
        assert status_of(response) == 200
        assert len(upstream_authorization(echo, before)) == 1

    def test_trace_on_the_git_route_gets_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"TRACE /git/localhost:{echo.port}{GIT_REFS}")
        assert status_of(response) == 200  # the host answered, without the credential
        assert_no_secret(response, secrets_)
        assert upstream_authorization(echo, before) == []
        assert proxy.last_entry(session="s-attack", method="TRACE")["injected"] is None

    def test_options_on_the_git_route_gets_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"OPTIONS /git/localhost:{echo.port}{GIT_REFS}")
        assert_no_secret(response, secrets_)
        assert upstream_authorization(echo, before) == []

    def test_put_to_a_git_service_gets_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"PUT /git/localhost:{echo.port}/r.git/git-receive-pack")
        assert_no_secret(response, secrets_)
        assert upstream_authorization(echo, before) == []

    @pytest.mark.parametrize("method", ["HEAD", "DELETE", "PATCH", "PROPFIND", "TRACK", "POST"])
    def test_other_methods_on_ref_discovery_get_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets, method: str
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"{method} /git/localhost:{echo.port}{GIT_REFS}")
        assert_no_secret(response, secrets_)
        assert upstream_authorization(echo, before) == []

    @pytest.mark.parametrize(
        "path",
        [
            "/user",  # an API call, not git
            "/repo.git/info/refs",  # dumb HTTP, no service
            "/repo.git/info/refs?service=evil",
            "/repo.git/info/refs?service=git-upload-pack&echo=1",
            "/repo.git/info/refsx?service=git-upload-pack",
            "/repo.git/HEAD",
            "/repo.git/objects/info/packs",
        ],
    )
    def test_non_git_paths_get_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets, path: str
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "limited", f"GET /git/localhost:{echo.port}{path}")
        assert status_of(response) == 200
        assert_no_secret(response, secrets_)
        assert upstream_authorization(echo, before) == []

    def test_a_git_service_post_with_a_query_gets_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        line = f"POST /git/localhost:{echo.port}/r.git/git-upload-pack?x=1"
        assert_no_secret(send(proxy, "limited", line), secrets_)
        assert upstream_authorization(echo, before) == []

    @pytest.mark.parametrize(
        "path",
        [
            "/api/../user/info/refs?service=git-upload-pack",
            "/x/%2e%2e/user/info/refs?service=git-upload-pack",
            "/x/..%2Fuser/info/refs?service=git-upload-pack",
            "/x/..;/user/info/refs?service=git-upload-pack",
            "/x\\..\\user/info/refs?service=git-upload-pack",
            "/user%3Fx=/info/refs?service=git-upload-pack",
            "/user%23/info/refs?service=git-upload-pack",
            "/user%00/info/refs?service=git-upload-pack",
        ],
    )
    def test_paths_an_upstream_could_normalize_get_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets, path: str
    ) -> None:
        before = len(echo.seen)
        assert_no_secret(send(proxy, "limited", f"GET /git/localhost:{echo.port}{path}"), secrets_)
        assert upstream_authorization(echo, before) == []

    def test_a_configured_api_route_gets_the_credential_for_its_methods_only(
        self, proxy: ProxyProcess, echo: EchoHost
    ) -> None:
        before = len(echo.seen)
        assert status_of(send(proxy, "limited", f"GET /git/localhost:{echo.port}/api/v1/x")) == 200
        assert len(upstream_authorization(echo, before)) == 1
        before = len(echo.seen)
        send(proxy, "limited", f"POST /git/localhost:{echo.port}/api/v1/x")
        send(proxy, "limited", f"TRACE /git/localhost:{echo.port}/api/v1/x")
        send(proxy, "limited", f"GET /git/localhost:{echo.port}/apiv1/x")
        assert upstream_authorization(echo, before) == []

    def test_absolute_form_naming_another_host_on_the_egress_port_is_not_the_git_route(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        target = f"http://evil.example:{proxy.egress_port}/git/localhost:{echo.port}{GIT_REFS}"
        response = send(proxy, "limited", f"GET {target}")
        # Plain forwarding to evil.example, which the allowlist refuses; nothing went out.
        assert status_of(response) == 403
        assert rule(response) == "allowlist"
        assert_no_secret(response, secrets_)
        assert len(echo.seen) == before

    def test_absolute_form_naming_the_proxy_by_a_name_is_not_the_git_route(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        before = len(echo.seen)
        target = f"http://localhost:{proxy.egress_port}/git/localhost:{echo.port}{GIT_REFS}"
        response = send(proxy, "open", f"GET {target}")
        assert status_of(response) == 403
        assert rule(response) == "proxy-port"
        assert_no_secret(response, secrets_)
        assert len(echo.seen) == before

    def test_absolute_form_to_the_proxys_own_address_is_the_git_route(
        self, proxy: ProxyProcess, echo: EchoHost
    ) -> None:
        before = len(echo.seen)
        target = f"http://127.0.0.1:{proxy.egress_port}/git/localhost:{echo.port}{GIT_REFS}"
        assert status_of(send(proxy, "limited", f"GET {target}")) == 200
        assert len(upstream_authorization(echo, before)) == 1

    def test_connect_to_the_credential_host_gets_no_credential(
        self, proxy: ProxyProcess, echo: EchoHost, secrets_: Secrets
    ) -> None:
        authorization = proxy_authorization("s-attack", proxy.mint("s-attack", "open"))
        request = (
            f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\nProxy-Authorization: {authorization}\r\n"
            f"\r\nGET {GIT_REFS} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        response = raw_exchange(proxy.egress_port, request.encode())
        assert b"HTTP/1.1 200 OK" in response
        assert_no_secret(response, secrets_)


class TestRequestTargets:
    @pytest.mark.parametrize("route", ["git", "forward"])
    def test_a_tab_in_the_request_target_is_refused(
        self, proxy: ProxyProcess, echo: EchoHost, route: str
    ) -> None:
        before = len(echo.seen)
        target = (
            f"/git/localhost:{echo.port}/repo.git/info/refs\t?service=git-upload-pack"
            if route == "git"
            else f"http://localhost:{echo.port}/a\tb"
        )
        response = send(proxy, "open", f"GET {target}")
        assert status_of(response) == 400
        assert rule(response) == "malformed-request"
        assert len(echo.seen) == before

    @pytest.mark.parametrize(
        "character", ["\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\xff", "\r"], ids=repr
    )
    def test_control_characters_and_non_ascii_in_the_target_are_refused(
        self, proxy: ProxyProcess, echo: EchoHost, character: str
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "open", f"GET http://localhost:{echo.port}/a{character}b")
        assert status_of(response) == 400
        assert len(echo.seen) == before

    def test_a_space_in_the_target_is_refused(self, proxy: ProxyProcess, echo: EchoHost) -> None:
        before = len(echo.seen)
        response = send(proxy, "open", f"GET http://localhost:{echo.port}/a b")
        assert status_of(response) == 400
        assert len(echo.seen) == before

    def test_a_control_character_in_a_header_value_is_refused(
        self, proxy: ProxyProcess, echo: EchoHost
    ) -> None:
        before = len(echo.seen)
        response = send(proxy, "open", f"GET http://localhost:{echo.port}/", "X-A: a\x00b\r\n")
        assert status_of(response) == 400
        assert len(echo.seen) == before


class TestSpecialPurposeAddresses:
    @pytest.mark.parametrize(("address", "category"), REPORTED_BYPASSES.items())
    @pytest.mark.parametrize("form", ["absolute", "connect", "git"])
    def test_the_reported_ipv6_bypasses_are_refused_in_open_mode(
        self, proxy: ProxyProcess, address: str, category: str, form: str
    ) -> None:
        authority = f"[{address}]:80"
        line = {
            "absolute": f"GET http://{authority}/latest/meta-data/",
            "connect": f"CONNECT {authority}",
            "git": f"GET /git/{authority}{GIT_REFS}",
        }[form]
        response = send(proxy, "open", line)
        assert status_of(response) == 403
        assert rule(response) == f"address:{category}"

    @pytest.mark.usefixtures("names_resolve")
    @pytest.mark.parametrize("environment", ["open", "limited"])
    @pytest.mark.parametrize(("index", "address"), list(enumerate(REPORTED_BYPASSES)))
    def test_names_resolving_to_the_reported_bypasses_are_refused(
        self, proxy: ProxyProcess, environment: str, index: int, address: str
    ) -> None:
        response = send(proxy, environment, f"GET http://bypass{index}.special.test/")
        assert status_of(response) == 403
        assert rule(response) == f"address:{REPORTED_BYPASSES[address]}"
        assert address in json.loads(response.partition(b"\r\n\r\n")[2])["error"]["message"]

    @pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.prefix)
    def test_every_special_purpose_address_is_refused_in_open_mode(
        self, proxy: ProxyProcess, entry: Entry
    ) -> None:
        host = f"[{entry.probe}]" if ":" in entry.probe else entry.probe
        response = send(proxy, "open", f"CONNECT {host}:443")
        assert status_of(response) == 403
        assert rule(response) == f"address:{entry.category}"

    @pytest.mark.usefixtures("names_resolve")
    @pytest.mark.parametrize(("index", "entry"), list(enumerate(ENTRIES)), ids=lambda v: str(v))
    def test_every_special_purpose_address_is_refused_by_name_in_limited_mode(
        self, proxy: ProxyProcess, index: int, entry: Entry
    ) -> None:
        assert HOSTS_NAMES[hosts_name(index)] == entry.probe
        response = send(proxy, "limited", f"GET http://{hosts_name(index)}/")
        assert status_of(response) == 403
        assert rule(response) == f"address:{entry.category}"

    @pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.prefix)
    def test_every_special_purpose_address_is_refused_in_mode_none(
        self, proxy: ProxyProcess, entry: Entry
    ) -> None:
        host = f"[{entry.probe}]" if ":" in entry.probe else entry.probe
        response = send(proxy, "locked", f"GET http://{host}/")
        assert status_of(response) == 403
        assert rule(response) == "mode-none"
