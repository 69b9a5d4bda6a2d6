"""A new user's first run: the demo works from a checkout anywhere, says what is wrong
fast when a pod cannot start, and leaves nothing behind when it is stopped.

The broken images here are real failures, not stubs: the runner runs them with a bare
Python that lacks Paddock (`--image`), as a custom image without the Paddock wheel would.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from paddock.kube import path
from paddock.testing.controlplane import REPO_ROOT
from paddock.testing.ports import wait_until
from paddock.testing.stack import LocalStack, Stuck, watch_session

from .test_local import _why_not

PADDOCK = "paddock.dev/v1alpha1"
EXAMPLES = REPO_ROOT / "examples"
BROKEN_HARNESS = "example.com/harness-without-paddock:1"
BROKEN_SANDBOX = "example.com/sandbox-without-paddock:1"

pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def _bridge_gone(bridge: str) -> bool:
    shown = subprocess.run(["ip", "link", "show", bridge], capture_output=True, text=True)
    return shown.returncode != 0


def _namespaces(bridge: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"{bridge}-")]


# --- from a checkout anywhere ------------------------------------------------------


def _copy_checkout(destination: Path) -> Path:
    """The checkout's files (tracked and new, as `git status` sees them) and a virtualenv
    of its own that runs the copy's code; its dependencies come from this one's."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, (entry.decode() for entry in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    venv = destination / ".venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The copy's source first; this checkout's venv only for the dependencies (its own
    # .pth files, which point at this checkout's source, are not read from a path line).
    Path(site, "paddock-copy.pth").write_text(
        f"{destination / 'operator'}\n{sysconfig.get_paths()['purelib']}\n"
    )
    found = subprocess.run(
        [python, "-c", "import paddock; print(paddock.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert found.startswith(str(destination)), found
    return python


def _demo(python: Path, checkout: Path, bridge: str, cidr: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "paddock.testing.stack", "demo", "--bridge", bridge, "--pod-cidr", cidr],
        cwd=checkout, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )  # fmt: skip


@pytest.mark.parametrize("where", ["tmp", "home"])
def test_the_demo_runs_from_a_checkout_under_tmp_or_home(where: str, tmp_path: Path) -> None:
    """Under /tmp (which the harness pod mounts an emptyDir over), in a path with a
    space; and under root's home, mode 0700, which other uids cannot enter."""
    if where == "tmp":
        checkout = tmp_path / "paddock checkout"
    else:
        checkout = Path.home() / f"paddock-e2e-{os.getpid()}"
        assert (Path.home().stat().st_mode & 0o077) == 0, "the home directory is not private"
    checkout.mkdir()
    try:
        python = _copy_checkout(checkout)
        bridge = f"pdk-{where}"
        done = _demo(
            python, checkout, bridge, "10.231.0.0/16" if where == "tmp" else "10.232.0.0/16"
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert '"stopReason": "end_turn"' in done.stdout, done.stdout[-4000:]
        assert "There are 25 primes below 100." in done.stdout
        assert _bridge_gone(bridge)
        assert not _namespaces(bridge)
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


# --- SIGTERM -----------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sigterm_stops_every_process_of_the_demo_and_its_network() -> None:
    bridge = "pdk-term"
    demo = subprocess.Popen(
        ["bash", "hack/demo.sh", "--bridge", bridge, "--pod-cidr", "10.233.0.0/16"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )  # fmt: skip
    output: list[str] = []
    assert demo.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: "Following it with the CLI" in "".join(output) and len(_namespaces(bridge)) >= 3,
            timeout=240, what="the demo's session and pods", interval=0.5,
        )  # fmt: skip
        started = _descendants(demo.pid)
        assert len(started) >= 8, started  # etcd, apiserver, redis, runner, operator, …
        # As `make` forwards it, or a supervisor sends it: to the demo process alone.
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=90) == 130, "".join(output)[-3000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    wait_until(
        lambda: not [p for p in started if _alive(p)],
        timeout=30, what="every process the demo started to exit", interval=0.2,
    )  # fmt: skip
    assert not _namespaces(bridge)
    assert _bridge_gone(bridge)
    assert not list(Path("/etc/netns").glob(f"{bridge}-*"))


# --- failures a user sees ------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python without Paddock: what a custom image that lacks the wheel runs."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.fixture(scope="module")
def stack(bare_python: str) -> Iterator[LocalStack]:
    with LocalStack(
        bridge="pdk-broken",
        pod_cidr="10.234.0.0/16",
        images={BROKEN_HARNESS: bare_python, BROKEN_SANDBOX: bare_python},
    ) as running:
        yield running


def _examples() -> tuple[dict[str, Any], dict[str, Any]]:
    environment, agent = yaml.safe_load_all((EXAMPLES / "hello-agent.yaml").read_text())
    return environment, agent


def _session(name: str, agent: str) -> dict[str, Any]:
    session = yaml.safe_load((EXAMPLES / "hello-session.yaml").read_text())
    session["metadata"]["name"] = name
    session["spec"]["agentRef"]["name"] = agent
    return session


def _condition(stack: LocalStack, kind: str, name: str, kind_of: str) -> dict[str, Any] | None:
    obj = stack.get(PADDOCK, kind, "default", name) or {}
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind_of]
    return found[0] if found else None


def _wait_for(stack: LocalStack, what: str, check: Any, timeout: float) -> Any:
    found: list[Any] = []

    def holds() -> bool:
        found[:] = [check()]
        return bool(found[0])

    try:
        wait_until(holds, timeout=timeout, what=what, interval=0.25)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    return found[0]


def _lines_until(process: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """What ``process`` printed up to the line holding ``needle``."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise AssertionError(f"{needle!r} not printed in {timeout:.0f}s:\n{seen}")
        if selector.select(timeout=left):
            seen += process.stdout.readline()
    return seen


def test_a_harness_that_keeps_failing_says_why_in_the_agent_and_in_paddock_logs(
    stack: LocalStack,
) -> None:
    environment, agent = _examples()
    environment["spec"]["warmPool"]["size"] = 0
    agent["metadata"]["name"] = "broken"
    agent["spec"]["harness"] = {"image": BROKEN_HARNESS}
    stack.apply(environment, agent)
    ready = _wait_for(
        stack,
        "the Agent's Ready condition to say HarnessCrashLooping",
        lambda: (
            (c := _condition(stack, "Agent", "broken", "Ready"))
            and c["reason"] == "HarnessCrashLooping"
            and c
        ),
        timeout=30,
    )
    assert ready["status"] == "False"
    assert "exited with 1" in ready["message"]
    assert ready["message"].endswith("No module named 'paddock')"), ready["message"]

    stack.apply(_session("waits", "broken"))
    session_id = stack.session_id("waits")
    logs = subprocess.Popen(
        [sys.executable, "-m", "paddock.cli", "logs", "-f", session_id],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PADDOCK_URL": stack.gateway_url, "PADDOCK_API_KEY": stack.api_key},
    )  # fmt: skip
    try:
        printed = _lines_until(
            logs, "waiting for a harness worker: HarnessCrashLooping: ", timeout=30
        )
    finally:
        logs.terminate()
        logs.wait()
    assert "No module named 'paddock'" in printed
    scheduled = _condition(stack, "Session", "waits", "Scheduled")
    assert scheduled is not None
    assert (scheduled["status"], scheduled["reason"]) == ("False", "WaitingForWorker")
    for kind, name in (("Session", "waits"), ("Agent", "broken")):
        stack.delete(PADDOCK, kind, "default", name)


def test_sandboxes_that_fail_to_start_back_off_and_the_environment_says_why(
    stack: LocalStack,
) -> None:
    environment, agent = _examples()
    environment["metadata"]["name"] = "no-server"
    environment["spec"]["image"] = BROKEN_SANDBOX
    agent["metadata"]["name"] = "sandboxless"
    agent["spec"]["environmentRef"]["name"] = "no-server"
    selector = "paddock.dev/component=sandbox,paddock.dev/environment=no-server"
    created: set[str] = set()
    assert stack.control_plane is not None

    def watch(seconds: float) -> None:
        """Every sandbox pod of the Environment the apiserver creates for `seconds`."""
        with (
            stack.control_plane.client() as client,  # type: ignore[union-attr]
            client.stream(
                "GET",
                path("v1", "Pod", "default"),
                params={
                    "watch": "1",
                    "labelSelector": selector,
                    "timeoutSeconds": str(int(seconds)),
                },
                timeout=httpx.Timeout(seconds + 10),
            ) as reply,
        ):
            for line in reply.iter_lines():
                event = json.loads(line)
                if event["type"] == "ADDED":
                    created.add(event["object"]["metadata"]["name"])

    watcher = threading.Thread(target=watch, args=(60,))
    watcher.start()
    stack.apply(environment, agent, _session("tools-wanted", "sandboxless"))
    watcher.join(timeout=80)
    assert not watcher.is_alive()
    # A pool of 2, a session's cold start, and a pod exiting in about a second: without
    # the backoff, dozens; with it, one start at a time after 2, 4, 8, … s.
    assert 2 <= len(created) <= 10, sorted(created)
    ready = _condition(stack, "Environment", "no-server", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "SandboxFailing")
    assert "No module named 'paddock'" in ready["message"], ready["message"]
    sandbox = _condition(stack, "Session", "tools-wanted", "SandboxBound")
    assert sandbox is not None
    assert sandbox["status"] == "False"


def test_the_demo_gives_up_on_a_broken_harness_with_the_reason_and_its_log(
    stack: LocalStack,
) -> None:
    """What `make demo` does when its session cannot progress: it stops waiting once the
    Agent has said HarnessCrashLooping for a while, and prints the reason and the failing
    container's last log lines."""
    environment, agent = _examples()
    environment["spec"]["warmPool"]["size"] = 0
    agent["metadata"]["name"] = "stuck"
    agent["spec"]["harness"] = {"image": BROKEN_HARNESS}
    stack.apply(environment, agent, _session("stuck-1", "stuck"))
    session_id = stack.session_id("stuck-1")
    cli = subprocess.Popen(
        [sys.executable, "-m", "paddock.cli", "logs", "-f", "--until-idle", session_id],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PADDOCK_URL": stack.gateway_url, "PADDOCK_API_KEY": stack.api_key},
    )  # fmt: skip
    try:
        # The first broken resource of the namespace it finds (other tests leave theirs).
        with pytest.raises(Stuck, match=r"^\S+: (HarnessCrashLooping|SandboxFailing): "):
            watch_session(stack, cli, "stuck-1")
    finally:
        cli.terminate()
        cli.wait()
    diagnosis = stack.diagnose()
    assert "agent/stuck: Ready=False HarnessCrashLooping" in diagnosis
    assert "session/stuck-1: Scheduled=False WaitingForWorker" in diagnosis
    assert "--- last lines of stuck-harness-" in diagnosis
    assert "No module named 'paddock'" in diagnosis.split("--- last lines of stuck-harness-")[1]
