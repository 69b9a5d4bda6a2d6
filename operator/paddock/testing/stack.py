"""The whole Paddock stack on one machine, no cluster: a real kube-apiserver and etcd,
redis-server, the local pod runner (which runs the pods the operator creates), the
operator, the gateway, and the scripted model unless a real API key is given.

`make demo` runs `python -m paddock.testing.stack demo`; tests/e2e uses `LocalStack`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import yaml

from paddock.eventlog import GATEWAY_USER, OPERATOR_USER
from paddock.kube import path
from paddock.operator.observed import Pod
from paddock.operator.render import PACKAGE_POLICY
from paddock.operator.status import pod_failure
from paddock.runner.spec import CONTAINER_PATH
from paddock.testing.controlplane import REPO_ROOT, ControlPlane
from paddock.testing.fakemodel import FakeModelServer, Script, demo_script
from paddock.testing.ports import die_with_parent, free_port, wait_until
from paddock.testing.proxy import ProxyProcess, Secrets
from paddock.testing.redis import RedisServer
from paddock.testing.relay import Relay

GATEWAY_NAMESPACE = "paddock-system"
API_KEY_SECRET = "paddock-demo-api-key"
MANAGER = "paddock-stack"


class LocalStack:
    """Start with ``with LocalStack(...) as stack:``; logs go to ``stack.dir``."""

    def __init__(
        self,
        *,
        bridge: str = "paddock0",
        pod_cidr: str = "10.244.0.0/16",
        anthropic_api_key: str | None = None,
        anthropic_url: str = "https://api.anthropic.com",
        images: dict[str, str] | None = None,
        pip_index_url: str | None = None,
        apt_sources: str | None = None,
        package_exceptions: tuple[str, ...] = (),
        proxy_exceptions: tuple[str, ...] = (),
        script: Script = demo_script,
    ) -> None:
        """Without ``anthropic_api_key``, the scripted model answers; with it, the proxy
        sidecars reach ``anthropic_url`` through a relay on the host. ``images`` maps an
        image to the Python that stands in for it (the runner's `--image`).
        ``pip_index_url`` (a mirror, or a test's index) is where Environment packages come
        from, reached through the package proxy on the host; ``package_exceptions`` are the
        `ip:port` pairs of such an index on loopback that the package proxy may reach;
        ``apt_sources`` likewise for apt packages (`PADDOCK_APT_SOURCES`); ``proxy_exceptions``
        those the Agents' proxy sidecars may reach (a test's OAuth token endpoint or MCP servers
        on the bridge). ``script`` is the scripted model's."""
        self.bridge, self.pod_cidr = bridge, pod_cidr
        self.images = images or {}
        self.pip_index_url = pip_index_url
        self.apt_sources = apt_sources
        self.package_exceptions = package_exceptions
        self.proxy_exceptions = proxy_exceptions
        self.script = script
        self.package_proxy: ProxyProcess | None = None
        self.anthropic_url = anthropic_url
        self.host_ip = pod_cidr.split("/")[0].rsplit(".", 1)[0] + ".1"
        self.anthropic_api_key = anthropic_api_key
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-stack-"))  # mode 0700: root's
        self.api_key = "pdk-" + secrets.token_urlsafe(24)
        self.gateway_port = free_port()
        self._exit = ExitStack()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.control_plane: ControlPlane | None = None
        self.model: FakeModelServer | None = None
        self.redis: RedisServer | None = None

    @property
    def gateway_url(self) -> str:
        # The bridge address: the host's clients and the harness pods (session files) alike.
        return f"http://{self.host_ip}:{self.gateway_port}"

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.control_plane = self._exit.enter_context(ControlPlane())
        self.control_plane.apply_crds()
        env = {**os.environ, "KUBECONFIG": str(self.control_plane.kubeconfig)}
        self._spawn(
            "runner",
            [sys.executable, "-m", "paddock.runner", "--bridge", self.bridge,
             "--pod-cidr", self.pod_cidr, "--state-dir", str(self.dir / "runner"),
             *(f"--image={image}={python}" for image, python in self.images.items())],
            env,
        )  # fmt: skip
        wait_until(self._bridge_up, timeout=30, what=f"the runner's bridge {self.bridge}")
        # Pods reach the host's services at the bridge address.
        self.redis = self._exit.enter_context(RedisServer(bind=f"127.0.0.1 {self.host_ip}"))
        redis_url = f"redis://{self.host_ip}:{self.redis.port}/0"
        self.package_proxy = self._start_package_proxy()
        # As the chart runs them: each component as its own Redis user, the harness pods as
        # their tenant's (the operator provisions it, the runner hands the Secret's password
        # to the harness container only).
        operator_env = {
            **env,
            "PADDOCK_REDIS_URL": redis_url,
            "PADDOCK_REDIS_USERNAME": OPERATOR_USER,
            "PADDOCK_REDIS_PASSWORD": self.redis.operator_password,
            "PADDOCK_METRICS_PORT": "0",
            "PADDOCK_GATEWAY_URL": self.gateway_url,
            "PADDOCK_PACKAGE_PROXY_URL": f"http://{self.host_ip}:{self.package_proxy.egress_port}",
            "PADDOCK_PACKAGE_PROXY_TOKEN_KEY_FILE": str(
                self.package_proxy.secrets.path("token_key")
            ),
            **({"PADDOCK_PIP_INDEX_URL": self.pip_index_url} if self.pip_index_url else {}),
            "PADDOCK_PROXY_ADDRESS_EXCEPTIONS": ",".join(self.proxy_exceptions),
            **({"PADDOCK_APT_SOURCES": self.apt_sources} if self.apt_sources else {}),
        }
        if self.anthropic_api_key is None:
            self.model = FakeModelServer(self.script, host=self.host_ip).start()
            self._exit.callback(self.model.stop)
            operator_env["PADDOCK_ANTHROPIC_URL"] = self.model.url
        else:
            relay = Relay(self.anthropic_url, host=self.host_ip).start()
            self._exit.callback(relay.stop)
            operator_env["PADDOCK_ANTHROPIC_URL"] = relay.url
        self._spawn("operator", [sys.executable, "-m", "paddock.operator"], operator_env)
        gateway_env = {
            **env,
            "PADDOCK_REDIS_URL": redis_url,
            "PADDOCK_REDIS_USERNAME": GATEWAY_USER,
            "PADDOCK_REDIS_PASSWORD": self.redis.gateway_password,
            "PADDOCK_GATEWAY_NAMESPACE": GATEWAY_NAMESPACE,
            "PADDOCK_GATEWAY_HOST": self.host_ip,
            "PADDOCK_GATEWAY_PORT": str(self.gateway_port),
            "PADDOCK_GATEWAY_FILES_DIR": str(self.dir / "files"),
            "PADDOCK_METRICS_PORT": "0",
        }
        self._spawn("gateway", [sys.executable, "-m", "paddock.gateway"], gateway_env)
        self.bootstrap("default")
        wait_until(self._gateway_up, timeout=60, what="the gateway")

    def _start_package_proxy(self) -> ProxyProcess:
        """The package proxy as the chart runs it, on the host (pods reach it at the bridge
        address): one registries-only policy, no credentials, the index's host allowed."""
        urls = [self.pip_index_url or ""] + [
            word for word in (self.apt_sources or "").split() if "://" in word
        ]
        hosts = sorted({host for url in urls if (host := urlsplit(url).hostname)})
        workdir = self.dir / "package-proxy"
        workdir.mkdir()
        proxy = ProxyProcess(
            workdir,
            Secrets(workdir / "secrets"),
            environments={
                PACKAGE_POLICY: {
                    "mode": "limited",
                    "allow_package_managers": True,
                    "allowed_domains": hosts,
                }
            },
            address_exceptions=list(self.package_exceptions),
        )
        proxy.config["listeners"]["egress"]["host"] = self.host_ip
        proxy.start()
        self._exit.callback(proxy.stop)
        return proxy

    def bootstrap(self, namespace: str) -> str:
        """A tenant namespace with the Claude API key Secret, and a gateway API key for it
        (returned): `api_key` for `default`, a key of its own for another namespace, so that
        tests sharing one stack each get a namespace (the gateway caches a key's namespace)."""
        key = self.anthropic_api_key or "sk-ant-demo-" + secrets.token_hex(8)
        default = namespace == "default"
        gateway_key = self.api_key if default else "pdk-" + secrets.token_urlsafe(24)
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            _secret(namespace, "anthropic", {"api-key": key}),
            _secret(
                GATEWAY_NAMESPACE,
                API_KEY_SECRET if default else f"{API_KEY_SECRET}-{namespace}",
                {"api-key": gateway_key, "namespace": namespace},
                labels={"paddock.dev/api-key": "true"},
            ),
        )
        return gateway_key

    def apply(self, *objects: dict[str, Any], namespace: str = "default") -> list[dict[str, Any]]:
        """Server-side apply, as `kubectl apply --server-side` does."""
        assert self.control_plane is not None
        return self.control_plane.apply(*objects, namespace=namespace, manager=MANAGER)

    def apply_file(self, file: Path, namespace: str = "default") -> list[dict[str, Any]]:
        return self.apply(
            *[doc for doc in yaml.safe_load_all(file.read_text()) if doc], namespace=namespace
        )

    def get(self, api_version: str, kind: str, namespace: str | None, name: str = "") -> Any:
        """An object (None if absent), or the items of a list when ``name`` is empty."""
        assert self.control_plane is not None
        return self.control_plane.read(api_version, kind, namespace, name)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        assert self.control_plane is not None
        with self.control_plane.client() as client:
            client.delete(path(api_version, kind, namespace, name))

    def session_id(self, name: str, namespace: str = "default", timeout: float = 60) -> str:
        """The `sesn_` id the operator gives a Session created with kubectl."""
        found: list[str] = []

        def labelled() -> bool:
            session = self.get("paddock.dev/v1alpha1", "Session", namespace, name) or {}
            labels = session.get("metadata", {}).get("labels") or {}
            found[:] = [labels.get("paddock.dev/session-id", "")]
            return bool(found[0])

        wait_until(labelled, timeout=timeout, what=f"the id of Session {name}", interval=0.2)
        return found[0]

    def exec_in(
        self, namespace: str, pod: str, container: str, argv: list[str]
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside a running container of a runner pod, as `kubectl exec`
        would: in its network, mount and PID namespaces, its root, as its uid."""
        found = self.get("v1", "Pod", namespace, pod)
        if found is None:
            raise LookupError(f"no pod {namespace}/{pod}")
        (definition,) = [c for c in found["spec"]["containers"] if c["name"] == container]
        context = {
            **(found["spec"].get("securityContext") or {}),
            **(definition.get("securityContext") or {}),
        }
        uid = context.get("runAsUser", 65534)
        gid = context.get("runAsGroup", uid)
        netns = f"{self.bridge}-{found['metadata']['uid'].replace('-', '')[:16]}"
        pids = subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True
        ).stdout.split()
        program = " ".join(definition.get("command", []))
        for pid in pids:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if program.split()[-1] in cmdline and Path(f"/proc/{pid}").stat().st_uid == uid:
                return subprocess.run(
                    ["nsenter", "-t", pid, "-m", "-n", "-p", "-r", "-w",
                     "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                     "env", "-i", f"PATH={CONTAINER_PATH}", *argv],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
        raise LookupError(f"container {container} of pod {pod} is not running")

    def pod_log(self, namespace: str, pod: str, container: str, lines: int = 20) -> str:
        """The last lines a container of a runner pod wrote ("" when there are none)."""
        for pod_dir in (self.dir / "runner" / "pods").glob(f"{namespace}_{pod}_*"):
            log_file = pod_dir / f"{container}.log"
            if log_file.exists():
                return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def conditions(self, namespace: str = "default") -> list[tuple[str, dict[str, Any]]]:
        """("kind/name", condition) of every Agent, Environment and Session."""
        found = []
        for kind in ("Agent", "Environment", "Session"):
            for obj in self.get("paddock.dev/v1alpha1", kind, namespace) or []:
                for condition in (obj.get("status") or {}).get("conditions") or []:
                    found.append((f"{kind.lower()}/{obj['metadata']['name']}", condition))
        return found

    def diagnose(self, namespace: str = "default") -> str:
        """What a user needs to see when a session makes no progress: every condition that
        is not True, then the last lines of each failing container's log."""
        parts = [
            f"{what}: {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}"
            for what, c in self.conditions(namespace)
            if c.get("status") != "True"
        ]
        for pod in self.get("v1", "Pod", namespace) or []:
            failure = pod_failure(Pod(pod))
            if failure is None:
                continue
            name = pod["metadata"]["name"]
            parts.append(f"pod/{name}: {failure[1]}")
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if status.get("restartCount") or "terminated" in (status.get("state") or {}):
                    tail = self.pod_log(namespace, name, status["name"])
                    if tail:
                        parts.append(f"--- last lines of {name}/{status['name']} ---\n{tail}")
        return "\n".join(parts)

    def logs(self) -> str:
        """The last lines each process and each runner pod's container wrote, for a failure
        message: a session that makes no progress is most often explained by its harness or
        proxy, which run in pods."""
        files = [(name, self.dir / f"{name}.log") for name in self._processes]
        for pod_dir in sorted((self.dir / "runner" / "pods").glob("*_*_*")):
            pod = pod_dir.name.rsplit("_", 1)[0].replace("_", "/", 1)
            files += [(f"{pod}/{log.stem}", log) for log in sorted(pod_dir.glob("*.log"))]
        parts = []
        for name, file in files:
            lines = file.read_text(errors="replace").splitlines()[-40:] if file.exists() else []
            parts.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def close(self) -> None:
        # The operator and gateway go first, the runner (which removes its pods) last.
        for name in ("gateway", "operator", "runner"):
            process = self._processes.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._exit.close()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.dir / f"{name}.log").open("ab") as out:
            self._processes[name] = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                preexec_fn=die_with_parent(),
            )

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"the {name} exited with {process.returncode}:\n{self.logs()}")

    def _bridge_up(self) -> bool:
        self._check_alive()
        shown = subprocess.run(
            ["ip", "-brief", "addr", "show", self.bridge], capture_output=True, text=True
        )
        return self.host_ip in shown.stdout

    def _gateway_up(self) -> bool:
        self._check_alive()
        reply = httpx.get(
            f"{self.gateway_url}/v1/agents", headers={"x-api-key": self.api_key}, timeout=2
        )
        return reply.status_code == 200


def _secret(
    namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


@contextmanager
def _step(out: TextIO, what: str) -> Iterator[None]:
    started = time.monotonic()
    out.write(f"· {what} … ")
    out.flush()
    yield
    out.write(f"{time.monotonic() - started:.1f}s\n")
    out.flush()


STALL_S = 90.0
"""A demo session with no new event for this long is stuck."""
FAILING_S = 20.0
"""A harness or sandbox that fails this long is broken, not starting."""
BROKEN = {"HarnessCrashLooping", "HarnessCannotStart", "SandboxFailing"}


class Stuck(Exception):
    """The demo session makes no progress; the message says why."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does: everything is cleaned up


def demo(keep: bool, bridge: str = "paddock0", pod_cidr: str = "10.244.0.0/16") -> int:
    """Bring the stack up, apply the examples, and follow the session with the CLI; fail
    fast, with the reason and the failing container's log, when the session is stuck."""
    signal.signal(signal.SIGTERM, _interrupt)
    out = sys.stdout
    api_key = os.environ.get("ANTHROPIC_API_KEY") or None
    if api_key and not _reachable("https://api.anthropic.com"):
        out.write(
            "ANTHROPIC_API_KEY is set but the Claude API is unreachable: using the scripted model\n"
        )
        api_key = None
    stack = LocalStack(anthropic_api_key=api_key, bridge=bridge, pod_cidr=pod_cidr)
    cli: subprocess.Popen[bytes] | None = None
    try:
        with _step(
            out,
            "control plane, Redis, runner, operator, gateway"
            + ("" if api_key else ", scripted model"),
        ):
            stack.start()
        examples = REPO_ROOT / "examples"
        with _step(
            out, "kubectl apply -f examples/hello-agent.yaml -f examples/hello-session.yaml"
        ):
            stack.apply_file(examples / "hello-agent.yaml")
            stack.apply_file(examples / "hello-session.yaml")
            session = stack.session_id("hello-1")
        out.write(f"\nSession hello-1 is {session}. Following it with the CLI:\n")
        out.write(
            f"  PADDOCK_URL={stack.gateway_url} PADDOCK_API_KEY=… paddock logs -f --until-idle {session}\n\n"
        )
        out.flush()
        cli_env = {**os.environ, "PADDOCK_URL": stack.gateway_url, "PADDOCK_API_KEY": stack.api_key}
        cli = subprocess.Popen(
            [sys.executable, "-m", "paddock.cli", "logs", "-f", "--until-idle", session],
            env=cli_env,
            preexec_fn=die_with_parent(),
        )
        code = watch_session(stack, cli, "hello-1")
        out.write("\n")
        # The status sync batches its patches: give the Session's status a moment to catch up.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: _settled(stack), timeout=30, what="the Session's status")
        for resource in ("Agent", "Session"):
            for obj in stack.get("paddock.dev/v1alpha1", resource, "default"):
                out.write(
                    f"{resource.lower()}/{obj['metadata']['name']}: {json.dumps(_brief(obj.get('status') or {}))}\n"
                )
        if keep:
            assert stack.control_plane is not None
            out.write(
                f"\nThe stack keeps running (Ctrl-C stops it). KUBECONFIG={stack.control_plane.kubeconfig} "
                f"PADDOCK_URL={stack.gateway_url} PADDOCK_API_KEY={stack.api_key}\n"
            )
            out.flush()
            while True:
                time.sleep(3600)
        return code
    except KeyboardInterrupt:
        return 130
    except Stuck as exc:
        out.write(f"\nthe demo is stuck: {exc}\n{stack.diagnose()}\n")
        return 1
    except Exception as exc:
        out.write(f"\nthe demo failed: {exc}\n{stack.logs()}\n")
        return 1
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if cli is not None and cli.poll() is None:
            cli.terminate()
            cli.wait()
        with _step(out, "stopping the stack"):
            stack.close()


def watch_session(stack: LocalStack, cli: subprocess.Popen[bytes], name: str) -> int:
    """Wait for the CLI to finish; raise `Stuck` when the Agent or Environment says it is
    broken for `FAILING_S`, or the Session has no new event for `STALL_S`."""
    progress, progressed_at = None, time.monotonic()
    broken_since: dict[str, float] = {}
    while True:
        try:
            return cli.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        session = stack.get("paddock.dev/v1alpha1", "Session", "default", name) or {}
        seen = (session.get("status") or {}).get("lastEventId")
        if seen != progress:
            progress, progressed_at = seen, now
        for what, condition in stack.conditions():
            key = f"{what} {condition.get('reason')}"
            if condition.get("status") == "False" and condition.get("reason") in BROKEN:
                if now - broken_since.setdefault(key, now) >= FAILING_S:
                    raise Stuck(f"{what}: {condition['reason']}: {condition.get('message')}")
            else:
                broken_since.pop(key, None)
        if now - progressed_at >= STALL_S:
            raise Stuck(f"session {name} has had no new event for {STALL_S:.0f}s")


def _settled(stack: LocalStack) -> bool:
    session = stack.get("paddock.dev/v1alpha1", "Session", "default", "hello-1") or {}
    return "stopReason" in (session.get("status") or {})


def _brief(status: dict[str, Any]) -> dict[str, Any]:
    keep = ("phase", "stopReason", "eventCount", "usage", "readyReplicas", "activeSessions")
    return {k: status[k] for k in keep if k in status}


def _reachable(url: str) -> bool:
    try:
        httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m paddock.testing.stack")
    parser.add_argument("command", choices=["demo"])
    parser.add_argument("--keep", action="store_true", help="keep the stack running afterwards")
    parser.add_argument("--bridge", default="paddock0", help="the pod network's bridge")
    parser.add_argument("--pod-cidr", default="10.244.0.0/16", help="the pod network")
    args = parser.parse_args()
    sys.exit(demo(args.keep, args.bridge, args.pod_cidr))


if __name__ == "__main__":
    main()
