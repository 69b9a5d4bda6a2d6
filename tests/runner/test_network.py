"""The local pod network hands out addresses as host-local IPAM does: a freed address is
reused last, so no pod meets another's stale neighbour entry for a reused address (its
first connections then waited about 8 s for ARP to give up on the old MAC)."""

from __future__ import annotations

import os
import shutil

import pytest

from paddock.runner.network import PodNetwork

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="the pod network needs root and ip (network namespaces, a bridge)",
)


def test_a_freed_address_is_reused_only_after_the_others() -> None:
    # Its own bridge and addresses, apart from `make demo`, tests/e2e and the benches.
    network = PodNetwork("paddock-rn", "10.248.0.0/29")  # .1 the bridge, .2 to .6 for pods
    network.up()
    try:
        first, first_address = network.add("first")
        _, second_address = network.add("second")
        network.remove(first, first_address)
        later = [network.add(f"later{n}")[1] for n in range(3)]
        assert first_address not in later
        assert {first_address, second_address, *later} == {f"10.248.0.{n}" for n in range(2, 7)}
        # Only when every other address is taken is the freed one handed out again.
        assert network.add("last")[1] == first_address
    finally:
        network.down()
