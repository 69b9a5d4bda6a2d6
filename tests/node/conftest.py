"""The one-node cluster (paddock.testing.node), started once for tests/node.

It skips only where the kernel refuses containers, found by running one with runc; any
other failure to bring the node up is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from paddock.testing.node import LocalNode, container_support


@pytest.fixture(scope="session")
def local_node() -> Iterator[LocalNode]:
    """kubelet + containerd + kube-proxy + kube-router + CoreDNS on this machine, Ready."""
    reason = container_support()
    if reason is not None:
        print(f"tests/node skipped: {reason}")
        pytest.skip(f"this kernel refuses containers: {reason}")
    with LocalNode() as node:
        yield node
