"""The images run: each one unpacked into an OCI bundle and started by runc, as a kubelet's
runtime would (non-root, no capabilities, a network namespace of its own, no rlimits)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from tests.images.support import Bundle, run_once, running

from paddock.testing.ports import wait_until

pytestmark = [pytest.mark.timeout(1800), pytest.mark.usefixtures("runc")]
PROGRAMS = ("operator", "harness", "proxy", "gateway")
TOKEN_DIR = "/var/run/paddock/sandbox"  # where the operator mounts the token (docs/sandbox.md)

# Run inside the container: GET a URL, print the status and the body.
GET = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""
# Run inside the container: one HTTP request to the sandbox server on its loopback.
CLIENT = """
import json, sys, urllib.request, urllib.error
method, path, token, body = sys.argv[1:5]
req = urllib.request.Request("http://127.0.0.1:8080" + path, method=method,
                             data=body.encode() if body else None)
if token:
    req.add_header("Authorization", "Bearer " + token)
if body:
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""


def test_paddock_image_has_its_four_programs(paddock_bundle: Bundle) -> None:
    """ENTRYPOINT python -m + a program: each program of the image imports, the proxy parses
    its arguments (the others take none and start serving at once)."""
    entrypoint = paddock_bundle.image.config["config"]["Entrypoint"]
    mains = "; ".join(f"import paddock.{p}.__main__" for p in PROGRAMS)
    result = run_once(paddock_bundle, paddock_bundle.spec(["python", "-c", mains], readonly=True))
    assert result.returncode == 0, result.stderr[-2000:]
    spec = paddock_bundle.spec([*entrypoint, "paddock.proxy", "--help"], readonly=True)
    result = run_once(paddock_bundle, spec)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m paddock.proxy" in result.stdout


def test_paddock_image_serves_the_proxy(paddock_bundle: Bundle, tmp_path: Path) -> None:
    """The credential proxy starts from the image, read-only root, and answers /healthz on
    its admin listener on the loopback of the container's own network namespace."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "api-key").write_text("sk-test-" + secrets.token_hex(16))
    (config / "token-key").write_text(secrets.token_hex(32))
    (config / "proxy.yaml").write_text(
        "api_key_file: /etc/paddock-test/api-key\ntoken_key_file: /etc/paddock-test/token-key\n"
    )
    entrypoint = paddock_bundle.image.config["config"]["Entrypoint"]
    spec = paddock_bundle.spec(
        [*entrypoint, "paddock.proxy", "--config", "/etc/paddock-test/proxy.yaml"],
        binds={"/etc/paddock-test": config},
        readonly=True,
    )
    with running(paddock_bundle, spec) as container:

        def healthz() -> str:
            probe = container.exec("python", "-c", GET, "http://127.0.0.1:8082/healthz")
            return probe.stdout.strip() if probe.returncode == 0 else ""

        status = wait_until(
            healthz, timeout=60, what=f"the proxy's /healthz; output: {container.output()}"
        )
        assert status.startswith("200 "), status


def test_paddock_image_is_unprivileged_and_has_no_shell_or_pip(paddock_bundle: Bundle) -> None:
    probe = (
        "import os, shutil, importlib.util, json; print(json.dumps({'uid': os.getuid(), "
        "'gid': os.getgid(), 'sh': [shutil.which(s) for s in ('sh', 'bash', 'dash')], "
        "'pip': importlib.util.find_spec('pip') is not None, "
        "'home': os.path.expanduser('~')}))"
    )
    result = run_once(paddock_bundle, paddock_bundle.spec(["python", "-c", probe], readonly=True))
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts == {
        "uid": 10001,
        "gid": 10001,
        "sh": [None, None, None],
        "pip": False,
        "home": "/nonexistent",
    }


def test_sandbox_image_serves_its_api_with_the_token_from_the_file(
    sandbox_bundle: Bundle, tmp_path: Path
) -> None:
    """The unchanged ENTRYPOINT starts the server; /healthz answers on loopback inside the
    container's network namespace, the tools need the bearer token from the mounted file,
    and bash runs as uid 10001 in /workspace."""
    token = secrets.token_urlsafe(24)
    token_dir = tmp_path / "token"
    token_dir.mkdir()
    (token_dir / "token").write_text(token + "\n")
    spec = sandbox_bundle.spec(binds={TOKEN_DIR: token_dir})
    with running(sandbox_bundle, spec) as container:

        def call(method: str, path: str, auth: str = "", body: str = "") -> tuple[int, str]:
            result = container.exec("python3", "-c", CLIENT, method, path, auth, body)
            if result.returncode != 0:
                return 0, result.stderr
            status, _, text = result.stdout.strip().partition(" ")
            return int(status), text

        health = wait_until(
            lambda: call("GET", "/healthz")[0] == 200 and call("GET", "/healthz"),
            timeout=60,
            what=f"the sandbox server's /healthz; output: {container.output()}",
        )
        assert json.loads(health[1]) == {"status": "ok"}
        assert call("GET", "/readyz")[0] == 200
        assert call("GET", "/v1/stats")[0] == 401
        assert call("GET", "/v1/stats", "not-" + token)[0] == 401
        assert call("GET", "/v1/stats", token)[0] == 200
        body = json.dumps({"input": {"command": "id -u; id -g; pwd; echo $HOME; git --version"}})
        status, text = call("POST", "/v1/tools/bash", token, body)
        assert status == 200, text
        result = json.loads(text)
        assert not result["is_error"], result
        lines = result["content"][0]["text"].splitlines()
        assert lines[:4] == ["10001", "10001", "/workspace", "/home/sandbox"], lines
        assert lines[4].startswith("git version"), lines
