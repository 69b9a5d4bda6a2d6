"""Fixtures for the image tests: the images built once (cached outside the repo), unpacked
into runc bundles, and a check that runc can start a container on this machine at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.images.support import Bundle, build_images, can_run_containers, run_once


@pytest.fixture(scope="session")
def images() -> Path:
    """The directory with paddock.tar and sandbox.tar (hack/build-images.sh)."""
    return build_images()


@pytest.fixture(scope="session")
def paddock_bundle(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.unpack(images / "paddock.tar", tmp_path_factory.mktemp("paddock") / "bundle")


@pytest.fixture(scope="session")
def sandbox_bundle(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.unpack(images / "sandbox.tar", tmp_path_factory.mktemp("sandbox") / "bundle")


@pytest.fixture(scope="session")
def runc(paddock_bundle: Bundle) -> None:
    """Skip (saying why) where runc cannot start a container here; found out by trying."""
    reason = can_run_containers()
    if reason is None:
        result = run_once(paddock_bundle, paddock_bundle.spec(["python", "-c", "print('ok')"]))
        if result.returncode != 0 or result.stdout.strip() != "ok":
            reason = f"runc cannot start a container here: {result.stderr.strip()[-500:]}"
    if reason:
        print(reason)
        pytest.skip(reason)
