"""Paddock installed with its Helm chart on the one-node cluster (paddock.testing.node).

`install(node)` does on a `LocalNode` what hack/kind-up.sh does on kind: the real images
(hack/build-images.sh, no Docker) and a Redis image (Debian's redis-server,
`paddock.testing.ociimage.redis_image`) imported into the node's containerd, a hostPath
PersistentVolume for the bundled Redis, the scripted model (hack/kind/fakemodel.yaml) unless
ANTHROPIC_API_KEY is set, the `anthropic` Secret, the CRDs, `helm upgrade --install
charts/paddock`, the rollouts waited for, and a gateway API key. When something does not
come up it fails with the reason: pod statuses, conditions, events, container logs.

`python -m paddock.testing.cluster demo [--keep]` (`make cluster`) then applies examples/ and
follows the example session with the `paddock` CLI to `end_turn`; `--keep` leaves it running
and prints KUBECONFIG, PADDOCK_URL and PADDOCK_API_KEY.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.fakemodel import SCRIPTS
from paddock.testing.node import LocalNode, container_support
from paddock.testing.ociimage import REDIS_IMAGE, redis_image, write_oci_archive
from paddock.testing.ports import wait_until

RELEASE = "paddock"
RELEASE_NAMESPACE = "paddock-system"
FAKEMODEL_NAMESPACE = "paddock-fakemodel"  # hack/kind/fakemodel-egress.yaml selects it
SESSION = "hello-1"  # examples/hello-session.yaml


def say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def chart_app_version() -> str:
    chart = (REPO_ROOT / "charts/paddock/Chart.yaml").read_text()
    found = re.search(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.MULTILINE)
    if not found:
        raise RuntimeError("no appVersion in charts/paddock/Chart.yaml")
    return found.group(1)


def _last_line(*command: str) -> Path:
    result = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def build_images() -> tuple[Path, float]:
    """hack/build-images.sh (cached): the directory of paddock.tar and sandbox.tar, and the
    seconds the build took (the cached build when nothing changed; build.json holds the
    full build's)."""
    started = time.monotonic()
    directory = _last_line("bash", str(REPO_ROOT / "hack/build-images.sh"))
    return directory, time.monotonic() - started


def helm_binary() -> Path:
    built = _last_line("bash", str(REPO_ROOT / "hack/build-helm.sh"))
    return built if built.is_file() else built / "helm"


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    built = _last_line("bash", str(REPO_ROOT / "hack/kind/build.sh"))
    return str(built / "kubectl")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call, with what it said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{(self.stderr or '').strip()[-3000:]}"


@dataclass
class Installation:
    """The chart installed on a node: how to reach it."""

    node: LocalNode
    kubectl_path: str
    helm_path: Path
    user_namespace: str
    scripted: bool
    gateway_url: str
    gateway_key: str
    anthropic_key: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig_path(self) -> Path:
        return self.node.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 600) -> str:
        """kubectl with the node's admin kubeconfig; raises CalledProcessError with its
        output when it fails."""
        result = subprocess.run(
            [self.kubectl_path, *args],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig_path)},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str) -> str:
        result = subprocess.run(
            [str(self.helm_path), *args],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig_path)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed:\n{result.stderr}")
        return result.stdout

    def diagnose(self, *namespaces: str) -> str:
        """Pod statuses, conditions, events and the logs of containers not ready."""
        return diagnose(self, *namespaces)


def diagnose(inst: Installation, *namespaces: str) -> str:
    parts: list[str] = []
    for namespace in namespaces or (RELEASE_NAMESPACE, inst.user_namespace):
        try:
            pods = inst.json("-n", namespace, "get", "pods")["items"]
        except subprocess.CalledProcessError as exc:
            parts.append(f"--- {namespace}: kubectl failed: {exc.stderr}")
            continue
        for pod in pods:
            name = pod["metadata"]["name"]
            status = pod.get("status", {})
            conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
            parts.append(f"--- pod {namespace}/{name}: {status.get('phase')} {conditions}")
            statuses = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
            for container in statuses:
                state = container.get("state", {})
                parts.append(f"    {container['name']}: ready={container['ready']} {state}")
                if not container["ready"]:
                    with contextlib.suppress(subprocess.CalledProcessError):
                        tail = inst.kubectl(
                            "-n", namespace, "logs", name, "-c", container["name"], "--tail=30"
                        )
                        parts.append(f"    logs of {container['name']}:\n{tail}")
        with contextlib.suppress(subprocess.CalledProcessError):
            events = inst.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp")
            parts.append(f"--- events in {namespace}\n" + "\n".join(events.splitlines()[-25:]))
    return "\n".join(parts)[-30_000:]


def _host_volume(inst: Installation, name: str, size: str, claim: str) -> None:
    """A hostPath PersistentVolume for one of the chart's claims (the node has no dynamic
    provisioner), pinned to that claim so the Redis and file-store claims cannot swap."""
    path = inst.node.dir / "volumes" / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # hostPath ignores fsGroup; Redis runs as 999, the gateway as another uid
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"paddock-{name}"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": RELEASE_NAMESPACE, "name": claim},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    inst.kubectl("apply", "-f", "-", input=json.dumps(volume))


def _ensure_namespace(inst: Installation, name: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    inst.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _rollouts(inst: Installation, namespace: str, selector: str, timeout: str) -> None:
    workloads = inst.kubectl(
        "-n", namespace, "get", "deployments,statefulsets", "-l", selector, "-o", "name"
    ).split()
    if not workloads:
        raise RuntimeError(f"no Deployments or StatefulSets match {selector} in {namespace}")
    for workload in workloads:
        try:
            inst.kubectl("-n", namespace, "rollout", "status", workload, f"--timeout={timeout}")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(
                f"{workload} in {namespace} did not roll out: {exc.stderr.strip()}\n"
                + inst.diagnose(namespace)
            ) from None


def install(
    node: LocalNode,
    *,
    user_namespace: str = "default",
    helm_args: Sequence[str] = (),
    timeout: str = "300s",
    fakemodel_script: str = "demo",
) -> Installation:
    """Paddock's chart on ``node``, ready: see the module's docstring. ``fakemodel_script``
    names the scripted model's script (`paddock.testing.fakemodel.SCRIPTS`)."""
    tag = chart_app_version()
    model_manifest = fakemodel_manifest(f"paddock/paddock:{tag}", fakemodel_script)
    started = time.monotonic()
    timings: dict[str, float] = {}
    images, build_seconds = build_images()
    timings["image_build_s"] = round(build_seconds, 2)
    redis_archive = write_oci_archive(redis_image(), node.dir / "redis-image.tar")
    for archive in (images / "paddock.tar", images / "sandbox.tar", redis_archive):
        node.import_image(archive)
    timings["images_imported_s"] = round(time.monotonic() - started, 2)
    build = images / "build.json"
    if build.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            recorded = json.loads(build.read_text())
            timings["image_full_build_s"] = float(recorded["seconds"]["total"])
    api_key = os.environ.get("ANTHROPIC_API_KEY", "")
    scripted = not api_key
    inst = Installation(
        node=node,
        kubectl_path=kubectl_binary(),
        helm_path=helm_binary(),
        user_namespace=user_namespace,
        scripted=scripted,
        gateway_url="",
        gateway_key=f"sk-paddock-{secrets.token_hex(24)}",
        anthropic_key=api_key or f"sk-ant-scripted-{secrets.token_hex(24)}",
        timings=timings,
    )
    _ensure_namespace(inst, user_namespace)
    _ensure_namespace(inst, RELEASE_NAMESPACE)
    anthropic_url = ""
    if scripted:
        say("deploying the scripted model (hack/kind/fakemodel.yaml)")
        anthropic_url = f"http://paddock-fakemodel.{FAKEMODEL_NAMESPACE}.svc.cluster.local:8000"
        _ensure_namespace(inst, FAKEMODEL_NAMESPACE)
        inst.kubectl(
            "-n",
            FAKEMODEL_NAMESPACE,
            "apply",
            "-f",
            "-",
            input=model_manifest,
        )
        inst.kubectl(
            "-n", user_namespace, "apply", "-f", str(REPO_ROOT / "hack/kind/fakemodel-egress.yaml")
        )
    secret = ["create", "secret", "generic", "anthropic", "--from-file=api-key=/dev/stdin"]
    inst.kubectl("-n", user_namespace, *secret, input=inst.anthropic_key)
    say("installing the CRDs and the chart")
    inst.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=paddock-cluster",
        "-f",
        str(REPO_ROOT / "charts/paddock/crds"),
    )
    redis_size = files_size = "1Gi"
    _host_volume(inst, "redis-data", redis_size, f"data-{RELEASE}-redis-0")
    _host_volume(inst, "gateway-files", files_size, f"{RELEASE}-gateway-files")
    repository, _, redis_tag = REDIS_IMAGE.rpartition(":")
    assert node.control_plane is not None
    # The operator's and gateway's egress to the API: after the `kubernetes` Service's DNAT
    # that is the apiserver's own address and port, not 443.
    api_server = {"cidrs": [f"{node.host_ip}/32"], "ports": [443, node.control_plane.port]}
    inst.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(REPO_ROOT / "charts/paddock"),
        "-n",
        RELEASE_NAMESPACE,
        "--set-string",
        f"image.tag={tag}",
        "--set-string",
        f"sandboxImage.tag={tag}",
        "--set-string",
        "image.pullPolicy=Never",
        "--set-string",
        f"redis.image.repository={repository}",
        "--set-string",
        f"redis.image.tag={redis_tag}",
        "--set-string",
        "redis.image.pullPolicy=Never",
        "--set-string",
        f"redis.persistence.size={redis_size}",
        "--set-string",
        f"gateway.files.persistence.size={files_size}",
        "--set-string",
        f"operator.anthropicUrl={anthropic_url}",
        "--set-json",
        f"networkPolicy.apiServer={json.dumps(api_server)}",
        # Two cores: the example Environment's sandboxes request 250m each, and a rolling
        # upgrade needs room for one more operator and gateway pod.
        *[
            arg
            for component in ("operator", "gateway", "redis", "packages")
            for arg in ("--set-string", f"{component}.resources.requests.cpu=20m")
        ],
        *helm_args,
    )
    timings["helm_install_s"] = round(time.monotonic() - started, 2)
    if scripted:
        _rollouts(inst, FAKEMODEL_NAMESPACE, "app.kubernetes.io/part-of=paddock", timeout)
    say("waiting for the operator, the gateway and Redis")
    _rollouts(
        inst,
        RELEASE_NAMESPACE,
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/part-of=paddock",
        timeout,
    )
    timings["chart_ready_s"] = round(time.monotonic() - started, 2)
    key_secret = f"cluster-{user_namespace}"
    add_gateway_key(inst, key_secret, user_namespace, inst.gateway_key)
    inst.gateway_url = gateway_url(inst)
    return inst


def fakemodel_manifest(image: str, script: str) -> str:
    """hack/kind/fakemodel.yaml with ``image`` and its server's `--script` set to ``script``
    (a name in `paddock.testing.fakemodel.SCRIPTS`)."""
    if script not in SCRIPTS:
        raise ValueError(f"no scripted-model script {script!r}: {sorted(SCRIPTS)}")
    manifest = (REPO_ROOT / "hack/kind/fakemodel.yaml").read_text()
    documents = [d for d in yaml.safe_load_all(manifest.replace("__IMAGE__", image)) if d]
    for document in documents:
        if document["kind"] == "Deployment":
            args = document["spec"]["template"]["spec"]["containers"][0]["args"]
            args[args.index("--script") + 1] = script
    return yaml.safe_dump_all(documents)


def uninstall(inst: Installation) -> None:
    """Undo `install` (idempotent): the release, the scripted model, the Redis and file-store
    claims and volumes, the gateway key and the `anthropic` Secret. The CRDs stay (as with helm)."""
    steps: list[tuple[str, ...]] = [
        ("-n", RELEASE_NAMESPACE, "delete", "secret", f"cluster-{inst.user_namespace}"),
        ("-n", inst.user_namespace, "delete", "secret", "anthropic"),
        ("-n", inst.user_namespace, "delete", "networkpolicy", "paddock-harness-to-fakemodel"),
        ("delete", "namespace", FAKEMODEL_NAMESPACE, "--wait=false"),
    ]
    with contextlib.suppress(RuntimeError):
        inst.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", "--timeout", "120s")
    steps += [
        ("-n", RELEASE_NAMESPACE, "delete", "pvc", "--all", "--wait=false"),
        ("delete", "pv", "paddock-redis-data", "paddock-gateway-files", "--wait=false"),
    ]
    for args in steps:
        with contextlib.suppress(subprocess.CalledProcessError):
            inst.kubectl(*args, "--ignore-not-found")


def add_gateway_key(inst: Installation, name: str, namespace: str, key: str) -> None:
    """A gateway API key (a labelled Secret in the release namespace) for ``namespace``."""
    inst.kubectl(
        "-n",
        RELEASE_NAMESPACE,
        "create",
        "secret",
        "generic",
        name,
        f"--from-literal=namespace={namespace}",
        "--from-file=api-key=/dev/stdin",
        input=key,
    )
    inst.kubectl("-n", RELEASE_NAMESPACE, "label", "secret", name, "paddock.dev/api-key=true")


def gateway_url(inst: Installation) -> str:
    """The gateway Service's ClusterIP: the host reaches it through kube-proxy's rules."""
    services = inst.json(
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "services",
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=gateway",
    )["items"]
    api = [s for s in services if not s["metadata"]["name"].endswith("-metrics")]
    if not api:
        raise RuntimeError(f"no gateway Service in {RELEASE_NAMESPACE}")
    spec = api[0]["spec"]
    return f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}"


def paddock_cli(
    inst: Installation, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    options = ["--url", inst.gateway_url, "--api-key", inst.gateway_key]
    return subprocess.run(
        [sys.executable, "-m", "paddock.cli", command, *options, *rest],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )


def apply_examples(inst: Installation, namespace: str | None = None) -> None:
    inst.kubectl(
        "-n",
        namespace or inst.user_namespace,
        "apply",
        "-f",
        str(REPO_ROOT / "examples/hello-agent.yaml"),
        "-f",
        str(REPO_ROOT / "examples/hello-session.yaml"),
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(keep: bool) -> int:
    reason = container_support()
    if reason:
        say(f"cannot run containers here: {reason}")
        return 1
    started = time.monotonic()
    with LocalNode() as node:
        say(f"node Ready in {time.monotonic() - started:.1f}s")
        inst = install(node)
        say(f"chart ready ({inst.timings}); applying examples/ in {inst.user_namespace}")
        apply_examples(inst)
        # The CLI retries while the harness has not yet created the session.
        deadline = time.monotonic() + 600
        while True:
            follow = paddock_cli(inst, "logs", SESSION, "-f", "--until-idle")
            if follow.returncode == 0 or time.monotonic() > deadline:
                break
            said = (follow.stderr + follow.stdout).lower()
            if "not found" not in said and "503" not in said:
                break
            time.sleep(2)
        print(follow.stdout, end="", flush=True)
        # The CLI reads the event log; the Session's status follows it a moment later.
        status: dict[str, Any] = {}

        def settled() -> bool:
            session = inst.json("-n", inst.user_namespace, "get", "session", SESSION)
            status.clear()
            status.update(session.get("status") or {})
            return bool(status.get("stopReason"))

        if follow.returncode == 0:
            with contextlib.suppress(TimeoutError):
                wait_until(settled, timeout=60, what="the Session's status", interval=1)
        if status.get("stopReason") != "end_turn":
            say(
                f"the session did not reach end_turn (CLI exit {follow.returncode}: "
                f"{follow.stderr.strip()[-2000:]})\nstatus: {json.dumps(status)[:3000]}\n"
                + inst.diagnose()
            )
            return 1
        sandbox = (status.get("sandbox") or {}).get("podName")
        say(
            f"session {SESSION}: end_turn in {time.monotonic() - started:.0f}s from a cold "
            f"start; its tools ran in sandbox pod {sandbox}"
        )
        if keep:
            print(
                f"export KUBECONFIG={inst.kubeconfig_path}\n"
                f"export PADDOCK_URL={inst.gateway_url}\n"
                f"export PADDOCK_API_KEY={inst.gateway_key}\n"
                "# Ctrl-C (or SIGTERM) tears the node down",
                flush=True,
            )
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    signal.pause()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paddock.testing.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="node + chart + examples, the session to end_turn")
    run.add_argument("--keep", action="store_true", help="keep it running until Ctrl-C")
    args = parser.parse_args(argv)
    return demo(args.keep)


if __name__ == "__main__":
    sys.exit(main())
