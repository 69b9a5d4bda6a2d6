"""MCP servers and vaults end to end on one machine: real pods (harness + proxy, sandboxes)
run by the local pod runner, the official SDK against the gateway, the scripted model.

Two real MCP servers (`paddock.testing.mcpserver`, processes on the pod network's bridge):
one takes a static bearer token, one the access tokens of a real OAuth authorization server
(`paddock.testing.oauth`), which it asks about every token (introspection), so expiry and
revocation there apply at once. The credentials are written with `client.beta.vaults`; the
session names the vault. An OAuth access token expires mid-session and the proxy's refresh
is used; a revoked refresh token gives the documented `mcp_authentication_failed_error`, and
the session goes on. Then no token is found anywhere but in the proxy's mounted Secret (and
the Kubernetes Secret): not in the sandbox's files or processes, the harness's environment,
Redis, the events, or any log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml

from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.fakemodel import ModelRequest, Reply, Text, ToolUse
from paddock.testing.mcpserver import McpServerProcess
from paddock.testing.oauth import AuthorizationServer, Clock
from paddock.testing.ports import free_port, wait_until
from paddock.testing.stack import LocalStack

from .test_local import _owned_by, _pods, _read, _ready_pods, _why_not

pytestmark = [
    pytest.mark.skipif(_why_not() is not None, reason=str(_why_not())),
    pytest.mark.timeout(600),
]

POD_CIDR = "10.249.0.0/16"
HOST = "10.249.0.1"
"""The bridge address (the stack's `host_ip`): pods reach the servers there."""
CALL = "Call "


def mcp_script(request: ModelRequest) -> Reply:
    """`Call <tool> <json input>`: call that tool, then report its result."""
    if request.tool_results:
        failed = bool(request.tool_results[0].get("is_error"))
        return Reply([Text(f"{'Failed' if failed else 'Result'}: {request.tool_result_text()}")])
    tool, _, arguments = request.last_user_text.removeprefix(CALL).partition(" ")
    return Reply([ToolUse(tool, json.loads(arguments))])


@dataclass
class World:
    """The stack and the servers the test's Agent uses."""

    stack: LocalStack
    auth: AuthorizationServer
    clock: Clock
    docs: McpServerProcess
    tickets: McpServerProcess

    @cached_property
    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.stack.gateway_url, api_key=self.stack.api_key)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    clock = Clock()
    # Its port is chosen first: the Agents' proxies get an address exception for it (the
    # token endpoint is on a private address), and the bridge exists only once the stack runs.
    auth = AuthorizationServer(clock=clock, host=HOST, port=free_port(), access_ttl_s=300)
    # The MCP servers too: server URLs get the egress address rules, and these are private.
    ports = {"docs": free_port(), "tickets": free_port()}
    base = tmp_path_factory.mktemp("mcp")
    with LocalStack(
        bridge="paddock-e2e5",
        pod_cidr=POD_CIDR,
        proxy_exceptions=tuple(f"{HOST}:{port}" for port in (auth.port, *ports.values())),
        script=mcp_script,
    ) as stack:
        assert stack.host_ip == HOST
        with auth.run_in_thread():
            docs = McpServerProcess(
                base / "docs",
                host=HOST,
                port=ports["docs"],
                introspection_url=auth.introspection_endpoint,
            ).start()
            tickets = McpServerProcess(base / "tickets", host=HOST, port=ports["tickets"]).start()
            try:
                yield World(stack, auth, clock, docs, tickets)
            finally:
                docs.stop()
                tickets.stop()


def _wait(stack: LocalStack, what: str, check: Any, timeout: float = 120) -> None:
    try:
        wait_until(check, timeout=timeout, what=what, interval=0.25)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnose()}\n{stack.logs()}") from None


def _events(world: World, session_id: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in world.client.beta.sessions.events.list(session_id, limit=1000)]


def _turn(world: World, session_id: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Send one `Call` message, wait for the turn's end; the MCP tool result it got."""
    done = sum(1 for e in _events(world, session_id) if e["type"] == "session.status_idle")
    text = f"{CALL}{tool} {json.dumps(arguments)}"
    world.client.beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )

    def idle_again() -> bool:
        return (
            sum(1 for e in _events(world, session_id) if e["type"] == "session.status_idle") > done
        )

    _wait(world.stack, f"the turn that calls {tool}", idle_again)
    events = _events(world, session_id)
    idle = [e for e in events if e["type"] == "session.status_idle"][-1]
    assert idle["stop_reason"]["type"] == "end_turn", events
    return [e for e in events if e["type"] == "agent.mcp_tool_result"][-1]


def _text(result: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in result.get("content") or [])


def _harness_pods_with_vaults(stack: LocalStack) -> bool:
    """Every harness pod is ready and mounts the vaults (no pod from before the Vault)."""
    pods = _pods(stack, **{"paddock.dev/component": "harness"})
    ready = _ready_pods(stack, "harness")
    with_vaults = [
        p for p in ready if any(v["name"] == "vaults" for v in p["spec"].get("volumes") or [])
    ]
    return bool(pods) and len(with_vaults) == len(pods)


def test_oauth_tokens_are_refreshed_and_a_revoked_refresh_is_reported(world: World) -> None:
    stack, auth, client = world.stack, world.auth, world.client
    documents = list(yaml.safe_load_all((REPO_ROOT / "examples/hello-agent.yaml").read_text()))
    environment = next(d for d in documents if d["kind"] == "Environment")
    environment["spec"]["warmPool"] = {"size": 1}
    stack.apply(environment)

    access, refresh, _ = auth.issue()
    vault = client.beta.vaults.create(display_name="team tools")
    client.beta.vaults.credentials.create(
        vault.id,
        auth={"type": "static_bearer", "token": world.tickets.token,
              "mcp_server_url": world.tickets.url},
    )  # fmt: skip
    client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "access_token": access,
            "mcp_server_url": world.docs.url,
            # Not close to expiry for the proxy: the token dies at the server first, so the
            # refresh is the one after the server's 401.
            "expires_at": datetime.now(UTC) + timedelta(hours=1),
            "refresh": {
                "refresh_token": refresh,
                "client_id": auth.client_id,
                "token_endpoint": auth.token_endpoint,
                "token_endpoint_auth": {
                    "type": "client_secret_basic",
                    "client_secret": auth.client_secret,
                },
            },
        },
    )
    always = {"permission_policy": {"type": "always_allow"}}
    agent = client.beta.agents.create(
        name="mcp-user",
        model="claude-sonnet-4-6",
        mcp_servers=[
            {"type": "url", "name": "docs", "url": world.docs.url},
            {"type": "url", "name": "tickets", "url": world.tickets.url},
        ],
        tools=[
            {"type": "agent_toolset_20260401"},
            {"type": "mcp_toolset", "mcp_server_name": "docs", "default_config": always},
            {"type": "mcp_toolset", "mcp_server_name": "tickets", "default_config": always},
        ],
    )
    _wait(stack, "harness pods that mount the vault", lambda: _harness_pods_with_vaults(stack))
    environment_id = next(e.id for e in client.beta.environments.list() if e.name == "python")
    session = client.beta.sessions.create(
        agent=agent.id, environment_id=environment_id, vault_ids=[vault.id]
    )

    # The static bearer server, and the OAuth one with the first access token.
    result = _turn(world, session.id, "mcp__tickets__echo", {"text": "hi"})
    assert (result.get("is_error"), _text(result)) == (False, "echo: hi"), result
    result = _turn(world, session.id, "mcp__docs__note", {"text": "one"})
    assert (result.get("is_error"), _text(result)) == (False, "noted: one"), result
    assert auth.grants() == []

    # The access token expires at the authorization server: the next call is refused once,
    # the proxy refreshes and sends it again.
    world.clock.advance(auth.access_ttl_s + 1)
    assert not auth.valid(access)
    result = _turn(world, session.id, "mcp__docs__note", {"text": "two"})
    assert (result.get("is_error"), _text(result)) == (False, "noted: two"), result
    assert auth.grants() == ["refresh_token"]
    assert auth.refreshes[0]["refresh_token"] == refresh
    assert world.docs.notes() == ["one", "two"]

    # The refresh token is revoked and the access token expires: the documented error, an
    # error result, and the session goes on.
    for token in list(auth.refresh):
        auth.revoke(token)
    world.clock.advance(auth.access_ttl_s + 1)
    result = _turn(world, session.id, "mcp__docs__note", {"text": "three"})
    assert result.get("is_error") is True, result
    assert "refused the credential" in _text(result), result
    events = _events(world, session.id)
    errors = [e["error"] for e in events if e["type"] == "session.error"]
    assert [(e["type"], e.get("mcp_server_name")) for e in errors] == [
        ("mcp_authentication_failed_error", "docs")
    ], errors
    assert auth.grants() == ["refresh_token", "refresh_token"]
    assert world.docs.notes() == ["one", "two"]
    result = _turn(world, session.id, "mcp__tickets__echo", {"text": "still here"})
    assert (result.get("is_error"), _text(result)) == (False, "echo: still here"), result
    uses = [e for e in _events(world, session.id) if e["type"] == "agent.mcp_tool_use"]
    assert [(u["mcp_server_name"], u["name"]) for u in uses] == [
        ("tickets", "echo"),
        ("docs", "note"),
        ("docs", "note"),
        ("docs", "note"),
        ("tickets", "echo"),
    ]

    _no_token_outside_the_proxy(world, session.id, vault.id)


def _files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` on its own filesystem: not into other mounts (a
    pod's rootfs mount point, the host's binds), not through symlinks."""
    device = root.stat().st_dev
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [
            d for d in subdirectories if (Path(directory) / d).lstat().st_dev == device
        ]
        for name in names:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _holding(secrets: list[str], places: dict[str, bytes]) -> list[tuple[str, str]]:
    """(place, secret) for every secret found in a place."""
    return [
        (place, secret)
        for place, content in places.items()
        for secret in secrets
        if secret.encode() in content
    ]


def _file_places(root: Path) -> dict[str, bytes]:
    places = {}
    for path in _files(root):
        with contextlib.suppress(OSError):
            places[str(path)] = path.read_bytes()
    return places


def _no_token_outside_the_proxy(world: World, session_id: str, vault_id: str) -> None:
    stack, auth = world.stack, world.auth
    secrets = [world.tickets.token, auth.client_secret, *auth.issued]
    assert len(secrets) >= 6  # bearer, client secret, two access and refresh tokens each

    # The positive control: the search finds what the proxy holds, in the files it mounts
    # and in the Kubernetes Secrets the gateway wrote.
    harness = _ready_pods(stack, "harness")[0]
    pods_dir = stack.dir / "runner" / "pods"
    (harness_dir,) = pods_dir.glob(f"default_{harness['metadata']['name']}_*")
    mounted = _file_places(harness_dir / "volumes" / "vaults")
    written = [world.tickets.token, auth.client_secret, auth.issued[0], auth.issued[1]]
    assert {s for _, s in _holding(written, mounted)} == set(written), list(mounted)
    kube_secrets = {
        s["metadata"]["name"]: b" ".join(
            base64.b64decode(v) for v in (s.get("data") or {}).values()
        )
        for s in stack.get("v1", "Secret", "default")
    }
    assert {s for _, s in _holding(written, kube_secrets)} == set(written)

    places: dict[str, bytes] = {}
    # The sandbox pods: every file the runner laid out for them on the host (volumes, home,
    # logs), and inside each one's mount namespace its root and writable layers (tmpfs, so
    # seen from there only). A canary written in the sandbox shows the search reaches them.
    sandboxes = _pods(stack, **{"paddock.dev/component": "sandbox"})
    assert sandboxes
    names = {p["metadata"]["name"] for p in sandboxes}
    for name in names:
        for pod_dir in pods_dir.glob(f"default_{name}_*"):
            places.update(_file_places(pod_dir))
    canary = "canary-" + os.urandom(8).hex()
    for name in names:
        # /tmp is in the container's root tmpfs.
        wrote = stack.exec_in(
            "default", name, "sandbox", ["sh", "-c", f"echo {canary} > /tmp/canary"]
        )
        assert wrote.returncode == 0, wrote.stderr
    inside = _inside_sandboxes(stack, names, [*secrets, canary])
    assert {s for _, s in inside} == {canary}, inside
    assert {p.split(":")[0] for p, _ in inside} == names, inside
    # Processes by pod (the runner sets HOSTNAME) and, in the harness pod, by uid.
    harness_uid = harness["spec"]["containers"][0]["securityContext"]["runAsUser"]
    seen = {"sandbox": 0, "harness": 0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        environ = _read(proc / "environ")
        host = next((v[9:] for v in environ.split("\0") if v.startswith("HOSTNAME=")), "")
        if host in names:
            where = "sandbox"
        elif host == harness["metadata"]["name"] and _owned_by(proc, harness_uid):
            where = "harness"
        else:
            continue
        seen[where] += 1
        places[f"{where} {proc}/environ"] = environ.encode()
        places[f"{where} {proc}/cmdline"] = _read(proc / "cmdline").encode()
    assert seen["sandbox"], seen
    assert seen["harness"], seen
    # Every Redis key and value, of every type.
    assert stack.redis is not None
    admin = stack.redis.admin()
    keys = list(admin.scan_iter(count=1000))
    assert keys
    for key in keys:
        places[f"redis {key!r}"] = key + _redis_value(admin, key)
    # Every event, through the API; the Vault, Agent and Session resources.
    places["events"] = json.dumps(_events(world, session_id), default=str).encode()
    for kind in ("Vault", "Agent", "Session"):
        places[f"{kind} resources"] = json.dumps(
            stack.get("paddock.dev/v1alpha1", kind, "default")
        ).encode()
    # Every log: the operator's, gateway's and runner's, every container's (harness, proxy,
    # sandbox), the package proxy's.
    logs = list(stack.dir.rglob("*.log"))
    assert any(p.name == "proxy.log" for p in logs)
    assert any(p.name == "gateway.log" for p in logs)
    for log_file in logs:
        places[f"log {log_file}"] = log_file.read_bytes()

    assert _holding(secrets, places) == []
    # The control again, in the same form: the search sees a value where one is.
    assert _holding(secrets, {**places, "proxy volume": b"".join(mounted.values())})


WALK = """
import json, os, sys
wanted = [line.encode() for line in sys.stdin.read().split()]
found = []
for start in sys.argv[1:]:
    device = os.stat(start).st_dev
    for directory, subdirectories, names in os.walk(start):
        subdirectories[:] = [
            d for d in subdirectories if os.lstat(os.path.join(directory, d)).st_dev == device
        ]
        for name in names:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                content = open(path, "rb").read()
            except OSError:
                continue
            found += [[path, w.decode()] for w in wanted if w in content]
print(json.dumps(found))
"""


def _inside_sandboxes(
    stack: LocalStack, names: set[str], wanted: list[str]
) -> list[tuple[str, str]]:
    """(file, value) for each value found in a sandbox container's root or writable layers,
    as its own mount namespace shows them (the runner mounts both as tmpfs in there)."""
    state = stack.dir / "runner"
    found: list[tuple[str, str]] = []
    walked = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        environ = _read(proc / "environ")
        host = next((v[9:] for v in environ.split("\0") if v.startswith("HOSTNAME=")), "")
        if host not in names or host in walked:
            continue
        walked.add(host)
        shown = subprocess.run(
            ["nsenter", "-t", proc.name, "-m", sys.executable, "-c", WALK,
             str(state / "rootfs"), str(state / "layers")],
            input="\n".join(wanted), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        found += [(f"{host}:{path}", value) for path, value in json.loads(shown.stdout)]
    assert walked == names, (walked, names)
    return found


def _redis_value(admin: Any, key: bytes) -> bytes:
    kind = admin.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "string":
        value: Any = admin.get(key)
    elif kind == "hash":
        value = admin.hgetall(key)
    elif kind == "list":
        value = admin.lrange(key, 0, -1)
    elif kind == "set":
        value = admin.smembers(key)
    elif kind == "zset":
        value = admin.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        value = admin.xrange(key)
    else:
        value = admin.dump(key)
    return repr(value).encode()
