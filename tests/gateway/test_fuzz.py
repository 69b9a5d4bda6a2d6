"""Property-based fuzzing of the served OpenAPI document with schemathesis: valid and
invalid requests of every operation, against `python -m paddock.gateway` (the real
entrypoint, in its own process) over the real apiserver and Redis. Bad input must never
yield a 5xx, and answers must match the document (status codes, content types, shapes)."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from paddock.gateway.auth import API_KEY_LABEL
from paddock.gateway.openapi import document
from paddock.testing.controlplane import ControlPlane
from paddock.testing.ports import free_port, wait_until
from paddock.testing.redis import RedisServer

from .stack import b64


@dataclass(frozen=True)
class RunningGateway:
    url: str
    key: str
    metrics_url: str
    log: Path
    system_namespace: str


@pytest.fixture(scope="module")
def gateway_process(
    control_plane: ControlPlane, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    suffix = secrets.token_hex(3)
    system, tenant = f"fuzz-system-{suffix}", f"fuzz-{suffix}"
    key = f"sk-fuzz-{secrets.token_urlsafe(12)}"
    with control_plane.client() as kube:
        for namespace in (system, tenant):
            kube.post(
                "/api/v1/namespaces", json={"metadata": {"name": namespace}}
            ).raise_for_status()
        kube.post(
            f"/api/v1/namespaces/{system}/secrets",
            json={
                "metadata": {"name": "fuzz-key", "labels": {API_KEY_LABEL: "true"}},
                "data": {"api-key": b64(key), "namespace": b64(tenant)},
            },
        ).raise_for_status()
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    env = {
        **os.environ,
        "PADDOCK_REDIS_URL": redis_server.plain_url,
        "PADDOCK_REDIS_USERNAME": "paddock-gateway",
        "PADDOCK_REDIS_PASSWORD": redis_server.gateway_password,
        "PADDOCK_GATEWAY_NAMESPACE": system,
        "PADDOCK_GATEWAY_HOST": "127.0.0.1",
        "PADDOCK_GATEWAY_PORT": str(port),
        "PADDOCK_METRICS_PORT": str(metrics_port),
        "KUBECONFIG": str(control_plane.kubeconfig),
        # Fuzzing is no normal use: it sends a thousand requests a minute with one key.
        "PADDOCK_GATEWAY_RATE_LIMIT": "1000",
        "PADDOCK_GATEWAY_RATE_BURST": "5000",
        "PADDOCK_GATEWAY_FILES_DIR": str(tmp_path_factory.mktemp("files")),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "paddock.gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            what="gateway",
        )
        yield RunningGateway(url, key, f"http://127.0.0.1:{metrics_port}/metrics", log, system)
    finally:
        process.terminate()
        process.wait(timeout=15)


# The document the gateway serves (checked below), loaded at import as parametrize needs.
schema = schemathesis.openapi.from_dict(document())
# The coverage phase enumerates boundary cases at collection, which takes a minute for these
# bodies; random generation (valid and invalid data) finds what it would, within budget.
schema.config.phases.update(phases=["examples", "fuzzing"])


def test_the_served_document_is_the_fuzzed_one(gateway_process: RunningGateway) -> None:
    served = httpx.get(f"{gateway_process.url}/v1/openapi.json", timeout=5)
    assert served.headers["content-type"].startswith("application/json")
    assert served.json() == document()


@pytest.fixture(scope="module")
def existing(gateway_process: RunningGateway) -> dict[str, str]:
    """Path parameters naming objects that exist, so fuzzing reaches past the lookups."""
    with httpx.Client(
        base_url=gateway_process.url, headers={"x-api-key": gateway_process.key}
    ) as http:
        environment = http.post("/v1/environments", json={"name": "fuzz-target"}).json()["id"]
        agent = http.post(
            "/v1/agents", json={"name": "fuzz-target", "model": "claude-sonnet-4-6"}
        ).json()["id"]
        session = http.post(
            "/v1/sessions", json={"agent": agent, "environment_id": environment}
        ).json()["id"]
        file = http.post("/v1/files", files={"file": ("fuzz.txt", b"fuzz")}).json()["id"]
        resource = http.post(
            f"/v1/sessions/{session}/resources", json={"type": "file", "file_id": file}
        ).json()["id"]
        vault = http.post("/v1/vaults", json={"display_name": "fuzz-target"}).json()["id"]
        credential = http.post(
            f"/v1/vaults/{vault}/credentials",
            json={
                "auth": {
                    "type": "mcp_oauth",
                    "access_token": "fuzz",
                    "mcp_server_url": "https://fuzz.example.com/mcp",
                }
            },
        ).json()["id"]
    return {
        "vault_id": vault,
        "credential_id": credential,
        "agent_id": agent,
        "environment_id": environment,
        "session_id": session,
        "file_id": file,
        "resource_id": resource,
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("target", ["unknown", "existing"])
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_fuzzing_finds_no_server_error(
    case: schemathesis.Case, target: str, gateway_process: RunningGateway, existing: dict[str, str]
) -> None:
    if target == "existing":
        if case.method == "DELETE" or case.path.endswith(("/archive", "/stream")):
            return  # these would end or block the objects the other operations use
        for name in case.path_parameters or {}:
            case.path_parameters[name] = existing[name]
    case.call_and_validate(
        base_url=gateway_process.url,
        headers={"x-api-key": gateway_process.key},
        timeout=10,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_the_entrypoint_serves_metrics(gateway_process: RunningGateway) -> None:
    # The fuzzing above went through this process.
    text = httpx.get(gateway_process.metrics_url, timeout=5).text
    assert 'paddock_gateway_requests_total{method="GET",route="/v1/agents"' in text
    assert "paddock_gateway_open_streams 0.0" in text
    # Fuzzing sent valid bodies as well as invalid ones.
    for status in ("200", "400"):
        assert f'route="/v1/agents",status="{status}"' in text
        assert f'route="/v1/sessions/{{session_id}}/events",status="{status}"' in text
    assert "Traceback" not in gateway_process.log.read_text()


# --- malformed requests, written by hand and sent over raw sockets -------------------------
#
# What schemathesis cannot send: broken framing, bodies that are not JSON, encodings that lie,
# over-long or too many headers, ids and query parameters no client would build, methods no
# route has. Every case is malformed, so every answer must be a 4xx in the envelope; no
# case may go unanswered (a closed connection) or get a 5xx.


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    half_close: bool = False
    """Shut our sending side after the request (for requests that end early)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def http_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    key: str | None = None,
    length: bool = True,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if key is not None:
        lines.append(f"x-api-key: {key}")
    lines += [f"{name}: {value}" for name, value in headers or []]
    if length and (body or method == "POST"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(port: int, case: Case, timeout: float = 15) -> Answer | None:
    """Send ``case`` and read one response: None if the connection closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(case.raw)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read the answer
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return None
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 1"):
                break
            data = body  # an interim answer (100 Continue): the real one follows
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return Answer(int(status_line.split()[1]), headers, body[:length])


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


# Bodies no route accepts: not JSON, not an object, too deep, unknown fields, wrong types.
BAD_BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("null", b"null"),
    ("array", b"[]"),
    ("array of object", b"[{}]"),
    ("number", b"1"),
    ("exponent", b"-0.0e5"),
    ("string", b'"a string"'),
    ("true", b"true"),
    ("open brace", b"{"),
    ("missing value", b'{"a":}'),
    ("single quotes", b"{'name': 'x'}"),
    ("trailing comma", b'{"name": "x",}'),
    ("utf-16 bom", b"\xff\xfe{\x00}\x00"),
    ("utf-8 bom array", b"\xef\xbb\xbf[]"),
    ("invalid utf-8", b'{"name": "\xff\xfe"}'),
    ("nul bytes", b"\x00" * 16),
    ("deep object", b'{"a":' * 100 + b"1" + b"}" * 100),
    ("deep array", b'{"a":' + b"[" * 100 + b"]" * 100 + b"}"),
    ("unclosed deep array", b"[" * 50_000),
    ("extra data", b'{"unknown_field": 1} trailing'),
    ("two objects", b'{"a": 1}{"a": 1}'),
    ("unknown field", b'{"unknown_field_xyz": 1}'),
    ("lone surrogate key", b'{"\\ud800": 1}'),
    ("lone surrogate value", b'{"metadata": {"k": "\\udfff"}, "unknown": 1}'),
    ("nan", b'{"unknown": NaN}'),
    ("infinity", b'{"unknown": Infinity, "name": -Infinity}'),
    ("huge number", b'{"unknown": 1' + b"0" * 5000 + b"}"),
    ("wrong type events", b'{"events": "not a list"}'),
    ("wrong type metadata", b'{"metadata": ["not", "an", "object"]}'),
    ("wrong type name", b'{"name": {"nested": true}, "title": 5, "events": 1}'),
    ("control characters", b'{"name": "a\x01b"}'),
    ("over a mebibyte", b'{"unknown": "' + b"a" * (1024 * 1024 + 10) + b'"}'),
]
HAS_AN_OBJECT = ["agent_id", "environment_id", "session_id"]


def body_cases(key: str, existing: dict[str, str]) -> list[Case]:
    targets = [
        "/v1/agents",
        "/v1/environments",
        "/v1/sessions",
        "/v1/agents/{agent_id}",
        "/v1/environments/{environment_id}",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/events",
    ]
    cases = []
    for template in targets:
        target = template.format(**existing)
        for name, body in BAD_BODIES:
            headers = [("Content-Type", "application/json")]
            cases.append(
                Case(
                    f"POST {template}: {name}", http_request("POST", target, headers, body, key=key)
                )
            )
    return cases


def encoding_cases(key: str, existing: dict[str, str]) -> list[Case]:
    # Semantically invalid even when decoded: whatever the server makes of the bytes, 4xx.
    body = b'{"name": 1, "model": []}'
    post = "/v1/agents"
    events = f"/v1/sessions/{existing['session_id']}/events"
    cases = []
    for encoding in (
        "gzip",
        "deflate",
        "br",
        "zstd",
        "gzip, gzip",
        "x-unknown",
        "identity, gzip",
        "GZIP",
    ):
        raw = http_request("POST", post, [("Content-Encoding", encoding)], body, key=key)
        cases.append(Case(f"Content-Encoding {encoding} on plain JSON", raw))
    cases.append(
        Case(
            "real gzip of an invalid body",
            http_request(
                "POST", post, [("Content-Encoding", "gzip")], gzip.compress(body), key=key
            ),
        )
    )
    cases.append(
        Case(
            "gzip bomb over the object limit",
            http_request(
                "POST",
                post,
                [("Content-Encoding", "gzip")],
                gzip.compress(b" " * 4_000_000),
                key=key,
            ),
        )
    )
    cases.append(
        Case(
            "gzip bomb over the event limit",
            http_request(
                "POST",
                events,
                [("Content-Encoding", "gzip")],
                gzip.compress(b" " * 40_000_000),
                key=key,
            ),
        )
    )
    cases.append(
        Case(
            "truncated gzip",
            http_request(
                "POST", post, [("Content-Encoding", "gzip")], gzip.compress(body)[:12], key=key
            ),
        )
    )
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
        "application/json; charset=nonsense",
        "application/xml",
        "",
    ):
        raw = http_request("POST", post, [("Content-Type", content_type)], body, key=key)
        cases.append(Case(f"Content-Type {content_type!r}", raw))
    te = [("Transfer-Encoding", "chunked")]
    framings = [
        ("chunked and Content-Length", [*te, ("Content-Length", "5")], chunked(body), False),
        (
            "Content-Length and chunked, big body",
            [("Content-Length", "300000"), *te],
            chunked(b"x" * 300_000),
            False,
        ),
        ("chunked twice", te + te, chunked(body), False),
        ("chunked, then gzip", [("Transfer-Encoding", "chunked, gzip")], chunked(body), False),
        (
            "gzip, then chunked, not gzip",
            [("Transfer-Encoding", "gzip, chunked")],
            chunked(body),
            False,
        ),
        ("identity transfer coding", [("Transfer-Encoding", "identity")], body, False),
        ("unknown transfer coding", [("Transfer-Encoding", "x-custom")], body, False),
        ("chunk size not hex", te, b"zz\r\n" + body + b"\r\n0\r\n\r\n", False),
        ("chunk size overflow", te, b"ffffffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n", False),
        ("chunk size negative", te, b"-5\r\nhello\r\n0\r\n\r\n", False),
        ("chunk without CRLF", te, b"5\r\nhelloXX0\r\n\r\n", False),
        ("chunk extension junk", te, b"5;\x01=\x02\r\nhello\r\n0\r\n\r\n", False),
        ("Content-Length negative", [("Content-Length", "-1")], body, False),
        ("Content-Length not a number", [("Content-Length", "abc")], body, False),
        ("Content-Length with a sign", [("Content-Length", f"+{len(body)}")], body, False),
        (
            "Content-Length with spaces inside",
            [("Content-Length", f"{len(body)} {len(body)}")],
            body,
            False,
        ),
        (
            "two different Content-Lengths",
            [("Content-Length", "3"), ("Content-Length", str(len(body)))],
            body,
            False,
        ),
        ("Content-Length in hex", [("Content-Length", hex(len(body)))], body, False),
    ]
    for name, headers, payload, half in framings:
        raw = http_request("POST", post, headers, payload, key=key, length=False)
        cases.append(Case(f"framing: {name}", raw, half_close=half))
    return cases


def header_cases(key: str, other_namespace: str) -> list[Case]:
    get = "/v1/agents"

    def with_key(value: str, *extra: tuple[str, str]) -> bytes:
        return http_request("GET", get, [("x-api-key", value), *extra])

    cases = [
        Case("x-api-key of 20,000 characters", with_key("k" * 20_000)),
        Case("x-api-key of 9,000 characters", with_key("k" * 9000)),
        Case("x-api-key of 8,000 characters", with_key("k" * 8000)),
        Case(
            "bearer token of 20,000 characters",
            http_request("GET", get, [("Authorization", "Bearer " + "t" * 20_000)]),
        ),
        Case(
            "header name of 10,000 characters",
            http_request("GET", get, [("x" * 10_000, "v")], key=key),
        ),
        Case(
            "cookie of 16 KiB", http_request("GET", get, [("Cookie", "c=" + "v" * 16_384)], key=key)
        ),
        Case(
            "200 headers", http_request("GET", get, [(f"x-h{i}", "v") for i in range(200)], key=key)
        ),
        Case(
            "129 headers", http_request("GET", get, [(f"x-h{i}", "v") for i in range(129)], key=key)
        ),
        Case("x-api-key with non-ASCII bytes", with_key("k\xff\xfe\xe9")),
        Case("x-api-key with a control character", with_key("k\x01k")),
        Case("x-api-key with a tab", with_key("k\tk")),
        Case("wrong x-api-key", with_key("sk-wrong")),
        Case("empty x-api-key", with_key("")),
        Case("no credentials", http_request("GET", get)),
        Case("Bearer without a token", http_request("GET", get, [("Authorization", "Bearer")])),
        Case("Bearer with blanks", http_request("GET", get, [("Authorization", "Bearer    ")])),
        Case(
            "Bearer with several words",
            http_request("GET", get, [("Authorization", "Bearer a b c")]),
        ),
        Case(
            "Bearer with a forged JWT",
            http_request(
                "GET",
                get,
                [
                    ("Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
                    ("x-paddock-namespace", "default"),
                ],
            ),
        ),
        Case(
            "Bearer with non-ASCII",
            http_request("GET", get, [("Authorization", "Bearer t\xe9\xff")]),
        ),
        Case(
            "Basic credentials",
            http_request("GET", get, [("Authorization", "Basic YWRtaW46YWRtaW4=")]),
        ),
        Case(
            "Digest credentials",
            http_request("GET", get, [("Authorization", 'Digest username="a"')]),
        ),
        Case(
            "header without a colon",
            http_request("GET", get, [("x-no-colon", "")], key=key).replace(
                b"x-no-colon: ", b"x-no-colon"
            ),
        ),
        Case("space before the colon", with_key(key).replace(b"x-api-key:", b"x-api-key :")),
        Case("obsolete line folding", http_request("GET", get, [("x-folded", "a\r\n b")], key=key)),
        Case("NUL in a header value", http_request("GET", get, [("x-nul", "a\x00b")], key=key)),
        Case("CR in a header value", http_request("GET", get, [("x-cr", "a\rb")], key=key)),
        Case("LF in a header value", http_request("GET", get, [("x-lf", "a\nb")], key=key)),
        Case("non-token header name", http_request("GET", get, [("x(y)", "v")], key=key)),
        Case("empty header name", http_request("GET", get, [("", "v")], key=key)),
        Case("no Host", with_key(key).replace(b"Host: 127.0.0.1\r\n", b"")),
        Case("two Hosts", http_request("GET", get, [("Host", "evil.example")])),
        Case(
            "Expect: 100-continue with no body",
            http_request("POST", get, [("Expect", "100-continue")], key=key, length=False),
        ),
        Case("unknown Expect", http_request("POST", get, [("Expect", "teapot")], b"{}", key=key)),
    ]
    for namespace in (
        "UPPER",
        "a" * 64,
        "../kube-system",
        "a_b",
        "-a",
        "a.b",
        "%00",
        "ns\xe9",
        other_namespace,
    ):
        raw = http_request("GET", get, [("x-paddock-namespace", namespace)], key=key)
        cases.append(Case(f"x-paddock-namespace {namespace[:20]!r}", raw))
    return cases


BAD_IDS = [
    "agent_" + "a" * 1000,
    "%00",
    "..%2F..%2Fapi",
    "%2e%2e",
    "%ff%fe",
    "%C3%A4",
    "a" * 300,
    "UPPER",
    "x_!!",
    "-leading",
    "null",
    "%20",
    "%3Cscript%3E",
    "sesn_0000000000000000000000",
    "env_%0d%0aSet-Cookie:%20x",
]


def id_cases(key: str) -> list[Case]:
    templates = [
        ("GET", "/v1/agents/{}"),
        ("POST", "/v1/agents/{}"),
        ("POST", "/v1/agents/{}/archive"),
        ("GET", "/v1/environments/{}"),
        ("DELETE", "/v1/environments/{}"),
        ("GET", "/v1/sessions/{}"),
        ("DELETE", "/v1/sessions/{}"),
        ("GET", "/v1/sessions/{}/events"),
        ("POST", "/v1/sessions/{}/events"),
        ("GET", "/v1/sessions/{}/events/stream"),
    ]
    body = b'{"events": [{"type": "user.interrupt"}]}'
    return [
        Case(
            f"{method} {template} id {ref[:24]!r}",
            http_request(
                method, template.format(ref), body=body if method == "POST" else b"", key=key
            ),
        )
        for method, template in templates
        for ref in BAD_IDS
    ]


def query_cases(key: str, existing: dict[str, str]) -> list[Case]:
    events = f"/v1/sessions/{existing['session_id']}/events"
    common = [
        "limit=-1", "limit=0", "limit=1001", "limit=" + "9" * 30, "limit=abc", "limit=", "limit=1.5",
        "page=garbage", "page=%ff", "page=" + "A" * 5000,
    ]  # fmt: skip
    specific = {
        "/v1/agents": ["include_archived=maybe", "created_at[gte]=yesterday", "limit=101"],
        "/v1/environments": ["include_archived=2", "limit=101"],
        "/v1/sessions": ["order=sideways", "statuses[]=bogus", "created_at[lt]=-"],
        events: ["order=sideways", "created_at[gte]=2026-01-01T00:00:00Z"],
    }  # fmt: skip
    cases = []
    for path, extra in specific.items():
        for query in common + extra:
            cases.append(
                Case(
                    f"GET {path[:20]}?{query[:30]}", http_request("GET", f"{path}?{query}", key=key)
                )
            )
    return cases


def method_cases(key: str, existing: dict[str, str]) -> list[Case]:
    paths = [
        "/v1/agents", "/v1/agents/{agent_id}", "/v1/agents/{agent_id}/archive", "/v1/environments",
        "/v1/environments/{environment_id}", "/v1/sessions", "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/events", "/v1/sessions/{session_id}/events/stream",
        "/v1/nothing", "/", "/v1/openapi.json",
    ]  # fmt: skip
    methods = ["PUT", "PATCH", "OPTIONS", "TRACE", "FOO", "get", "PROPFIND"]
    return [
        Case(f"{method} {path}", http_request(method, path.format(**existing), key=key))
        for path in paths
        for method in methods
    ]


def framing_cases() -> list[Case]:
    def raw(text: bytes, half: bool = False) -> Case:
        return Case(f"raw {text[:40]!r}", text, half_close=half)

    return [
        raw(b"GET /v1/agents HTTP/2.0\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1\n\n"),
        raw(b"GET /v1/agents HTTP/1.1\nHost: x\n\n"),
        raw(b"GET  /v1/agents  HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET\t/v1/agents\tHTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1 extra\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/a\x00gents HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/agents\x7f HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET http://evil.example/v1/agents HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET //evil.example/v1/agents HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"),
        raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n"),
        raw(bytes(range(256)) * 2 + b"\r\n\r\n"),
        raw(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/agents?" + b"q=" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n" + b"x" * 9000 + b"\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1\r\n Host: x\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/agents HTTP/9.9\r\n\r\n"),
        raw(b"\r\n\r\n\r\nGET /v1/agents HTTP/1.1\r\nHost: x\r\n\r\n"),
        raw(b"get /v1/agents http/1.1\r\nHost: x\r\n\r\n"),
        raw(
            b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ),
        raw(
            b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        ),
        raw(b"GET /v1/agents HTTP/1.0\r\n\r\n"),
        raw(b"GET /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
        raw(b"HTTP/1.1 200 OK\r\n\r\n"),
        raw(b"\x00\x00\x00\x00\r\n\r\n"),
    ]


def test_malformed_requests_get_the_envelope(
    gateway_process: RunningGateway, existing: dict[str, str]
) -> None:
    key, port = gateway_process.key, int(gateway_process.url.rsplit(":", 1)[1])
    cases = (
        body_cases(key, existing)
        + encoding_cases(key, existing)
        + header_cases(key, gateway_process.system_namespace)
        + id_cases(key)
        + query_cases(key, existing)
        + method_cases(key, existing)
        + framing_cases()
    )
    assert len(cases) >= 300
    failures, statuses = [], Counter[int]()
    for case in cases:
        try:
            answer = exchange(port, case)
        except TimeoutError:
            failures.append(f"{case.name}: no answer within 15 s")
            continue
        if answer is None:
            failures.append(f"{case.name}: connection closed without an answer")
            continue
        statuses[answer.status] += 1
        problem = _not_an_envelope(answer)
        if problem:
            failures.append(f"{case.name}: {answer.status} {problem}: {answer.body[:200]!r}")
    print(f"{len(cases)} malformed requests: statuses {dict(sorted(statuses.items()))}")
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures)
    assert "Traceback" not in gateway_process.log.read_text()


def _not_an_envelope(answer: Answer) -> str | None:
    if not 400 <= answer.status < 500:
        return "not a 4xx"
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"content type {answer.headers.get('content-type')!r}"
    if not answer.headers.get("request-id", "").startswith("req_"):
        return "no request-id"
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if body.get("type") != "error" or not isinstance(error, dict):
        return "not the envelope"
    if not isinstance(error.get("type"), str) or not isinstance(error.get("message"), str):
        return "no error type or message"
    return None
