"""A hostile model in a sandbox finds no secret and reaches nothing it should not.

Run the way a sandbox runs: `python -m paddock.sandbox` as an unprivileged user (uid 65534)
with an environment built from nothing, bound to a real credential proxy whose secret files are
root-only. The commands go through the sandbox's own bash tool. Two placements:

- ``loopback``: sandbox and proxy share the machine's loopback, as on a developer machine;
- ``netns``: the sandbox in a network namespace that holds only loopback and a relay to the
  proxy, as a NetworkPolicy leaves a sandbox pod. Here direct egress is tried as well.

Every output is checked for the API key, the git token (raw and in its Basic form) and the
HMAC key. ``PADDOCK_SHOW_HOSTILE=1 pytest -s`` prints what each command returned.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.proxy.support import Upstream

import paddock
from paddock.testing.gitserver import CLIENT_ENV, GitServer
from paddock.testing.ports import free_port, wait_until
from paddock.testing.proxy import ProxyProcess, Secrets

NOBODY = 65534
RELAY = Path(__file__).with_name("relay.py")
SANDBOX_PROXY_PORT = 3128  # where the proxy appears inside the namespace


def _run_as_nobody(base: Path) -> list[str]:
    """A command prefix that runs a program as uid 65534 with an empty environment, able to run
    this Python. Skips the test where that is impossible."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to start the sandbox as an unprivileged user")
    drop = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "env", "-i", f"PATH={CLIENT_ENV['PATH']}", f"HOME={base / 'home'}", "LANG=C.UTF-8",
    ]  # fmt: skip
    probe = [sys.executable, "-c", "import paddock.sandbox"]
    if subprocess.run([*drop, *probe], capture_output=True, timeout=30).returncode == 0:
        return drop
    # This Python (or the clone holding the venv and the paddock package) lies under a
    # directory the sandbox user cannot traverse: root's home (pyenv, mode 0700), or a
    # private folder (`mktemp -d`). In a private mount namespace each such directory becomes an
    # empty tmpfs holding only the trees Python needs, so the sandbox user can run Python
    # and still sees nothing else there.
    pairs = _blocked_trees(
        [Path(sys.base_prefix), Path(sys.prefix), Path(paddock.__file__).parent.parent]
    )
    if not pairs or shutil.which("unshare") is None:
        pytest.skip(f"uid {NOBODY} cannot run {sys.executable}")
    # Stage every tree from the original view, then cover the blocked directories outermost
    # first, each followed by the trees it must still hold (a tree may hold the next one).
    stages = {tree: base / f"stage-{n}" for n, (_, tree) in enumerate(pairs)}
    steps = ["set -e"]
    for tree, stage in stages.items():
        stage.mkdir()
        steps.append(f"mount --bind {shlex.quote(str(tree))} {shlex.quote(str(stage))}")
    for blocked in dict.fromkeys(blocked for blocked, _ in pairs):
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(blocked))}")
        for tree in (tree for outer, tree in pairs if outer == blocked):
            stage = shlex.quote(str(stages[tree]))
            steps += [
                f"mkdir -p {shlex.quote(str(tree))}",
                f"mount --bind {stage} {shlex.quote(str(tree))}",
                f"umount {stage}",
            ]
    script = "; ".join([*steps, 'exec "$@"'])
    wrapper = ["unshare", "-m", "sh", "-c", script, "sh", *drop]
    if subprocess.run([*wrapper, *probe], capture_output=True, timeout=30).returncode != 0:
        pytest.skip(f"uid {NOBODY} cannot run {sys.executable}, even in a private mount namespace")
    return wrapper


def _blocked_trees(paths: list[Path]) -> list[tuple[Path, Path]]:
    """Every (directory others cannot traverse, its child on the way to one of ``paths``),
    outermost first: each such directory is to become a tmpfs holding only those children."""
    pairs: set[tuple[Path, Path]] = set()
    for path in paths:
        resolved = path.resolve()
        for ancestor in reversed(resolved.parents):
            if not ancestor.stat().st_mode & stat.S_IXOTH:
                pairs.add((ancestor, ancestor / resolved.relative_to(ancestor).parts[0]))
    return sorted(pairs, key=lambda pair: (len(pair[0].parts), pair))


@dataclass
class World:
    """The proxy, its secrets, and what stands for the internet and a private git host."""

    proxy: ProxyProcess
    secrets: Secrets
    internet: Upstream
    git: GitServer


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, module_secrets: Secrets, git_server: GitServer
) -> Iterator[World]:
    with Upstream() as internet:
        proxy = ProxyProcess(
            tmp_path_factory.mktemp("hostile-proxy"),
            module_secrets,
            upstream=internet.url,
            environments={"default": {"mode": "limited", "allowed_domains": ["localhost"]}},
            credentials=[
                {
                    "host": "localhost",
                    "secret_file": str(module_secrets.path("git_token")),
                    "scheme": "basic",
                }
            ],
            address_exceptions=[f"127.0.0.1:{internet.port}", f"127.0.0.1:{git_server.port}"],
            upstream_scheme_overrides={f"localhost:{git_server.port}": "http"},
        )
        proxy.start()
        try:
            yield World(proxy, module_secrets, internet, git_server)
        finally:
            proxy.stop()


@dataclass
class Sandbox:
    """A bound sandbox server, reached the way the harness reaches it."""

    client: httpx.Client
    placement: str
    base: Path

    def bash(self, command: str) -> str:
        reply = self.client.post(
            "/v1/tools/bash", json={"input": {"command": command, "timeout_ms": 30000}}
        )
        reply.raise_for_status()
        return "".join(block["text"] for block in reply.json()["content"])


class Processes:
    """Processes the test started, stopped in reverse order."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *argv: str, wait_for_ready: bool = False) -> subprocess.Popen[bytes]:
        log = (self.base / f"process-{len(self.started)}.log").open("wb")
        stdout = subprocess.PIPE if wait_for_ready else log
        process = subprocess.Popen(argv, stdout=stdout, stderr=log)
        self.started.append(process)
        if wait_for_ready:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n", (
                self.base / f"process-{len(self.started) - 1}.log"
            ).read_text()
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _netns_available() -> str | None:
    """Why a network namespace cannot be used here, or None."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        return f"unshare -n fails: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture(params=["loopback", "netns"])
def sandbox(request: pytest.FixtureRequest, world: World) -> Iterator[Sandbox]:
    placement = request.param
    if placement == "netns" and (reason := _netns_available()) is not None:
        pytest.skip(f"no network namespace: {reason}")
    # Not under pytest's tmp_path: that is root-only, and the sandbox user needs its workdir.
    base = Path(tempfile.mkdtemp(prefix="paddock-hostile-"))
    base.chmod(0o755)
    for name in ("home", "workspace"):
        (base / name).mkdir()
        os.chown(base / name, NOBODY, NOBODY)
    sockets = base / "sockets"  # root-only: the relays' Unix sockets
    sockets.mkdir(mode=0o700)
    sandbox_token = secrets.token_urlsafe(24)
    (base / "token").write_text(sandbox_token)
    os.chown(base / "token", NOBODY, NOBODY)
    (base / "token").chmod(0o600)
    processes = Processes(sockets)
    namespace = f"paddock-hostile-{secrets.token_hex(4)}"
    port = free_port()
    serve = [
        *_run_as_nobody(base), sys.executable, "-m", "paddock.sandbox", "--host", "127.0.0.1",
        "--port", str(port), "--workdir", str(base / "workspace"), "--token-file", str(base / "token"),
    ]  # fmt: skip
    try:
        if placement == "loopback":
            processes.start(*serve)
            transport, proxy_url = (
                httpx.HTTPTransport(),
                f"http://127.0.0.1:{world.proxy.egress_port}",
            )
        else:
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            in_ns = ["ip", "netns", "exec", namespace]
            subprocess.run([*in_ns, "ip", "link", "set", "lo", "up"], check=True)
            relay = [sys.executable, str(RELAY)]
            egress_sock, api_sock = sockets / "egress.sock", sockets / "sandbox.sock"
            processes.start(
                *relay,
                f"unix:{egress_sock}",
                f"tcp:127.0.0.1:{world.proxy.egress_port}",
                wait_for_ready=True,
            )
            processes.start(
                *in_ns,
                *relay,
                f"tcp:127.0.0.1:{SANDBOX_PROXY_PORT}",
                f"unix:{egress_sock}",
                wait_for_ready=True,
            )
            processes.start(
                *in_ns, *relay, f"unix:{api_sock}", f"tcp:127.0.0.1:{port}", wait_for_ready=True
            )
            processes.start(*in_ns, *serve)
            transport, proxy_url = (
                httpx.HTTPTransport(uds=str(api_sock)),
                f"http://127.0.0.1:{SANDBOX_PROXY_PORT}",
            )
        client = httpx.Client(
            transport=transport,
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {sandbox_token}"},
            timeout=60,
        )
        wait_until(
            lambda: client.get("/healthz").status_code == 200, timeout=20, what="sandbox server"
        )
        bound = client.post(
            "/v1/bind",
            json={
                "session_id": "sesn_hostile",
                "proxy_url": proxy_url,
                "proxy_token": world.proxy.mint("sesn_hostile", "default"),
                "git_credential_hosts": [f"localhost:{world.git.port}"],
                "repositories": [{"url": f"https://localhost:{world.git.port}/repo.git"}],
                "files": [],
            },
        )
        assert bound.status_code == 200, bound.text
        assert bound.json()["repositories"][0]["ok"], bound.text  # cloned with the injected token
        yield Sandbox(client, placement, base)
        client.close()
    finally:
        processes.stop()
        if placement == "netns":
            subprocess.run(["ip", "netns", "del", namespace], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_hostile_model_finds_no_secret_and_reaches_nothing(
    sandbox: Sandbox, world: World
) -> None:
    proxy = world.proxy
    assert proxy.process is not None
    pid, secrets_dir = proxy.process.pid, world.secrets.dir
    internet, git = f"localhost:{world.internet.port}", f"localhost:{world.git.port}"
    # Forced through the proxy even for loopback destinations (NO_PROXY lists them).
    via = '-x "$HTTP_PROXY" --noproxy ""'
    curl = "curl -sS --max-time 10 -w '\\nstatus=%{http_code} connect=%{http_connect}\\n'"
    outputs: dict[str, str] = {}
    secret_values = world.secrets.values()

    def run(name: str, command: str) -> str:
        """The command's output, checked at once for every secret byte sequence."""
        output = outputs[name] = sandbox.bash(command)
        if os.environ.get("PADDOCK_SHOW_HOSTILE"):
            print(f"==== {name}\n{output}")
        for secret_name, value in secret_values.items():
            if value in output:  # pytest.fail: no assertion rewrite that would print the value
                pytest.fail(f"{secret_name} leaked to the sandbox through {name!r}")
        return output

    assert run("whoami", "id -u").startswith(f"{NOBODY}\n")
    run("env", "env")
    run("all environ", "cat /proc/*/environ | tr '\\0' '\\n'")
    run("proxy environ", f"cat /proc/{pid}/environ; cat /proc/{pid}/cmdline; ls /proc/{pid}/fd")
    run("proxy memory", f"head -c 1000000 /proc/{pid}/mem | tr -cd '[:print:]' | head -c 10000")
    run("processes", "ps auxe")
    run("secret files", f"cat {secrets_dir}/* {secrets_dir}/..data/*; ls -la {secrets_dir}")
    run("config", f"cat {proxy.config_path}")
    run("service account", "ls -la /var/run/secrets /run/secrets; cat /var/run/secrets/*/*/*")
    run("root home", "ls -la /root")
    run("git config", "cat ~/.gitconfig")
    run("git trace", f"GIT_TRACE_CURL=1 git ls-remote https://{git}/repo.git 2>&1")

    # Through the proxy: what policy refuses.
    assert "status=403" in run("disallowed host", f"{curl} http://evil.example/")
    assert "status=403" in run("metadata", f"{curl} http://169.254.169.254/latest/meta-data/")
    assert "connect=403" in run(
        "connect admin", f"{curl} -p {via} http://127.0.0.1:{proxy.admin_port}/healthz"
    )
    assert "connect=403" in run("connect redis", f"{curl} -p {via} http://127.0.0.1:6379/")
    assert "connect=403" in run(
        "connect api", f"{curl} -p {via} http://127.0.0.1:{proxy.api_port}/v1/models"
    )
    assert "status=403" in run("loopback", f"{curl} {via} http://localhost:22/")
    forged = '-x "http://sesn_hostile:forged@${HTTP_PROXY##*@}" --noproxy ""'
    assert "status=407" in run("forged token", f"{curl} {forged} http://{internet}/")
    # And what it allows: the stand-in internet, and the private repository (cloned at bind).
    assert "status=200" in run("allowed", f"{curl} {via} http://{internet}/")
    assert "hello from the git host" in run("clone", f"cat {sandbox.base}/workspace/repo/README")

    if sandbox.placement == "netns":
        # Direct egress, bypassing the proxy: nothing answers but the proxy itself.
        direct = "curl -sS --max-time 5 --noproxy '*' -o /dev/null -w 'status=%{http_code}\\n'"
        for name, url in {
            "direct internet": f"http://127.0.0.1:{world.internet.port}/",
            "direct admin": f"http://127.0.0.1:{proxy.admin_port}/v1/session-tokens",
            "direct metadata": "http://169.254.169.254/latest/meta-data/",
        }.items():
            assert "status=000" in run(name, f"{direct} {url}"), outputs[name]
        assert "status=200" in run("only the proxy", f"{curl} {via} http://{internet}/")
