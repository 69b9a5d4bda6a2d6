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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from paddock.kube.client import APPLY, path
from paddock.testing.controlplane import REPO_ROOT, ControlPlane
from paddock.testing.fakemodel import FakeModelServer, demo_script
from paddock.testing.ports import free_port, wait_until
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
    ) -> None:
        """Without ``anthropic_api_key``, the scripted model answers; with it, the proxy
        sidecars reach ``anthropic_url`` through a relay on the host."""
        self.bridge, self.pod_cidr = bridge, pod_cidr
        self.anthropic_url = anthropic_url
        self.host_ip = pod_cidr.split("/")[0].rsplit(".", 1)[0] + ".1"
        self.anthropic_api_key = anthropic_api_key
        self.dir = Path(tempfile.mkdtemp(prefix="paddock-stack-"))
        self.dir.chmod(0o711)  # containers run as other uids and need a way to their files
        self.api_key = "pdk-" + secrets.token_urlsafe(24)
        self.gateway_port = free_port()
        self._exit = ExitStack()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.control_plane: ControlPlane | None = None
        self.model: FakeModelServer | None = None
        self.redis: RedisServer | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

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
             "--pod-cidr", self.pod_cidr, "--state-dir", str(self.dir / "runner")],
            env,
        )  # fmt: skip
        wait_until(self._bridge_up, timeout=30, what=f"the runner's bridge {self.bridge}")
        # Pods reach the host's services at the bridge address.
        self.redis = self._exit.enter_context(RedisServer(bind=f"127.0.0.1 {self.host_ip}"))
        redis_url = f"redis://{self.host_ip}:{self.redis.port}/0"
        operator_env = {**env, "PADDOCK_REDIS_URL": redis_url, "PADDOCK_METRICS_PORT": "0"}
        if self.anthropic_api_key is None:
            self.model = FakeModelServer(demo_script, host=self.host_ip).start()
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
            "PADDOCK_GATEWAY_NAMESPACE": GATEWAY_NAMESPACE,
            "PADDOCK_GATEWAY_HOST": "127.0.0.1",
            "PADDOCK_GATEWAY_PORT": str(self.gateway_port),
            "PADDOCK_METRICS_PORT": "0",
        }
        self._spawn("gateway", [sys.executable, "-m", "paddock.gateway"], gateway_env)
        self.bootstrap("default")
        wait_until(self._gateway_up, timeout=60, what="the gateway")

    def bootstrap(self, namespace: str) -> None:
        """A tenant namespace with the Claude API key Secret, and a gateway API key for it."""
        key = self.anthropic_api_key or "sk-ant-demo-" + secrets.token_hex(8)
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            _secret(namespace, "anthropic", {"api-key": key}),
            _secret(
                GATEWAY_NAMESPACE,
                API_KEY_SECRET,
                {"api-key": self.api_key, "namespace": namespace},
                labels={"paddock.dev/api-key": "true"},
            ),
        )

    def apply(self, *objects: dict[str, Any], namespace: str = "default") -> list[dict[str, Any]]:
        """Server-side apply, as `kubectl apply --server-side` does."""
        applied = []
        assert self.control_plane is not None
        with self.control_plane.client() as client:
            for obj in objects:
                meta = obj["metadata"]
                if obj["kind"] != "Namespace":
                    meta.setdefault("namespace", namespace)
                reply = client.patch(
                    path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
                    content=json.dumps(obj),
                    headers={"Content-Type": APPLY},
                    params={"fieldManager": MANAGER, "force": "true"},
                )
                if reply.status_code >= 300:
                    raise RuntimeError(f"applying {obj['kind']} {meta['name']}: {reply.text}")
                applied.append(reply.json())
        return applied

    def apply_file(self, file: Path, namespace: str = "default") -> list[dict[str, Any]]:
        return self.apply(
            *[doc for doc in yaml.safe_load_all(file.read_text()) if doc], namespace=namespace
        )

    def get(self, api_version: str, kind: str, namespace: str | None, name: str = "") -> Any:
        """An object (None if absent), or the items of a list when ``name`` is empty."""
        assert self.control_plane is not None
        reply = self.control_plane.get(path(api_version, kind, namespace, name))
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return reply.json() if name else reply.json()["items"]

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

    def logs(self) -> str:
        """The last lines each process wrote, for a failure message."""
        parts = []
        for name in self._processes:
            text = (self.dir / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-40:]))
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
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT
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


def demo(keep: bool) -> int:
    """Bring the stack up, apply the examples, and follow the session with the CLI."""
    out = sys.stdout
    api_key = os.environ.get("ANTHROPIC_API_KEY") or None
    if api_key and not _reachable("https://api.anthropic.com"):
        out.write(
            "ANTHROPIC_API_KEY is set but the Claude API is unreachable: using the scripted model\n"
        )
        api_key = None
    stack = LocalStack(anthropic_api_key=api_key)
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
        code = subprocess.run(
            [sys.executable, "-m", "paddock.cli", "logs", "-f", "--until-idle", session],
            env=cli_env,
            timeout=600,
        ).returncode
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
            out.write(
                f"\nThe stack keeps running (Ctrl-C stops it). KUBECONFIG={stack.control_plane.kubeconfig} "  # type: ignore[union-attr]
                f"PADDOCK_URL={stack.gateway_url} PADDOCK_API_KEY={stack.api_key}\n"
            )
            out.flush()
            while True:
                time.sleep(3600)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        out.write(f"\nthe demo failed: {exc}\n{stack.logs()}\n")
        return 1
    finally:
        with _step(out, "stopping the stack"):
            stack.close()


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
    args = parser.parse_args()
    sys.exit(demo(args.keep))


if __name__ == "__main__":
    main()
