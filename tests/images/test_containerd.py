"""A node's runtime takes the archives: `ctr images import` into a containerd of the test's own
(its own root, state and socket; the CRI plugin off) names them as the chart pulls them, and
`ctr run` starts the paddock image from containerd's snapshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paddock.testing.ports import wait_until

pytestmark = [pytest.mark.timeout(1800), pytest.mark.usefixtures("runc")]
NAMESPACE = "k8s.io"  # where the kubelet's CRI looks for images


@pytest.fixture
def containerd() -> Iterator[Path]:
    """The socket of a containerd started for this test."""
    binary = shutil.which("containerd")
    if binary is None or shutil.which("ctr") is None:
        reason = "containerd is not installed (apt-get install containerd)"
        print(reason)
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="paddock-ctrd-"))  # a short path: socket names are short
    socket = home / "containerd.sock"
    (home / "config.toml").write_text(
        f'version = 2\nroot = "{home}/root"\nstate = "{home}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{socket}.ttrpc"\n'
    )
    log = (home / "containerd.log").open("wb")
    process = subprocess.Popen(
        [binary, "--config", str(home / "config.toml")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: _ctr(socket, "version").returncode == 0, timeout=30, what="containerd's socket"
        )
        yield socket
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        subprocess.run(["umount", "-R", str(home / "root")], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _ctr(socket: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ctr_imports_the_archives_under_the_charts_names(images: Path, containerd: Path) -> None:
    for name in ("paddock", "sandbox"):
        result = _ctr(containerd, "images", "import", str(images / f"{name}.tar"))
        assert result.returncode == 0, result.stderr
    listed = _ctr(containerd, "images", "list", "--quiet").stdout.split()
    assert "docker.io/paddock/paddock:0.1.0" in listed
    assert "docker.io/paddock/sandbox:0.1.0" in listed
    start = time.monotonic()
    result = _ctr(
        containerd,
        "run",
        "--rm",
        "docker.io/paddock/paddock:0.1.0",
        f"paddock-img-{int(start)}",
        "python",
        "-c",
        "import os, paddock.proxy; print(os.getuid())",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "10001"
