"""Session and event ids: prefixed, fixed width, sortable, mapped to stream positions."""

from __future__ import annotations

import random
import time

import pytest

from paddock.eventlog import (
    InvalidId,
    check_agent,
    decode_base62,
    encode_base62,
    event_id,
    new_id,
    new_session_id,
    session_keys,
    session_tag,
    stream_id,
    tenant_patterns,
    tenant_prefix,
    work_keys,
)


def test_base62_is_fixed_width_and_sorts_like_the_numbers() -> None:
    rng = random.Random(7)
    numbers = [0, 1, 61, 62, 62**8 - 1, *(rng.randrange(62**8) for _ in range(2000))]
    encoded = [encode_base62(n, 8) for n in numbers]
    assert {len(text) for text in encoded} == {8}
    assert [decode_base62(text) for text in encoded] == numbers
    assert sorted(encoded) == [encode_base62(n, 8) for n in sorted(numbers)]
    with pytest.raises(ValueError, match="does not fit"):
        encode_base62(62**8, 8)


def test_event_ids_map_to_stream_positions_and_sort_like_them() -> None:
    tag = session_tag("sesn_abc")
    rng = random.Random(3)
    positions = [
        (rng.randrange(1_700_000_000_000, 1_800_000_000_000), rng.randrange(5000))
        for _ in range(2000)
    ]
    ids = [event_id(f"{ms}-{seq}", tag) for ms, seq in positions]
    assert all(len(i) == len(ids[0]) and i.startswith("sevt_") for i in ids)
    assert [stream_id(i, tag) for i in ids] == [f"{ms}-{seq}" for ms, seq in positions]
    assert sorted(ids) == [event_id(f"{ms}-{seq}", tag) for ms, seq in sorted(positions)]
    assert event_id(b"1712577601120-3", tag) == event_id("1712577601120-3", tag)


def test_an_event_id_of_another_session_or_garbage_is_refused() -> None:
    mine, theirs = session_tag("sesn_mine"), session_tag("sesn_theirs")
    assert mine != theirs
    other = event_id("1712577601120-0", theirs)
    with pytest.raises(InvalidId, match="another session"):
        stream_id(other, mine)
    for garbage in [
        "",
        "sevt_",
        "sevt_01A",
        "evt_" + other[5:],
        other + "x",
        other[:5] + "!" + other[6:],
    ]:
        with pytest.raises(InvalidId):
            stream_id(garbage, theirs)


def test_session_ids_are_prefixed_unique_and_sort_by_creation_time() -> None:
    first = [new_session_id() for _ in range(1000)]
    time.sleep(0.002)  # the millisecond clock moves on, on purpose
    later = new_session_id()
    assert len(set(first)) == 1000
    assert all(i.startswith("sesn_") and len(i) == len(later) for i in first)
    assert all(i < later for i in first)
    session_keys("default", later)  # well-formed


@pytest.mark.parametrize("prefix", ["agent_", "env_"])
def test_other_ids_share_the_format_with_their_own_prefix(prefix: str) -> None:
    first = [new_id(prefix) for _ in range(1000)]
    time.sleep(0.002)  # the millisecond clock moves on, on purpose
    later = new_id(prefix)
    assert len(set(first)) == 1000
    assert all(i < later for i in first)
    body = later.removeprefix(prefix)
    assert later.startswith(prefix)
    assert len(body) == len(new_session_id()) - len("sesn_")
    assert body.isalnum()
    assert body.isascii()


@pytest.mark.parametrize(
    "bad", ["", "sesn_", "session_abc", "sesn_a}b", "sesn_{x}", "sesn_a:b", "sesn_" + "a" * 65]
)
def test_malformed_session_ids_never_reach_a_key(bad: str) -> None:
    with pytest.raises(InvalidId):
        session_keys("default", bad)


def test_session_keys_share_one_hash_tag_under_the_tenant_prefix() -> None:
    keys = session_keys("team-a", "sesn_abc")
    assert all(key.startswith("paddock:t:team-a:{sesn_abc}:") for key in keys)
    assert len(set(keys)) == len(keys)
    stream, queued = work_keys("team-a/coder")
    assert stream == "paddock:t:team-a:agent:{team-a/coder}:work"
    assert queued.startswith("paddock:t:team-a:")
    assert tenant_patterns("team-a") == ("~paddock:t:team-a:*", "&paddock:t:team-a:*")


@pytest.mark.parametrize("bad", ["", "Team", "a:b", "a*", "a?", "a[b]", "a\\b", "-a", "a" * 64])
def test_a_tenant_is_a_namespace_name_so_no_prefix_covers_another(bad: str) -> None:
    # ':' or a glob character would let one tenant's ACL pattern match another's keys.
    with pytest.raises(InvalidId):
        tenant_prefix(bad)


@pytest.mark.parametrize("bad", ["coder", "default/", "/coder", "a/b/c", "Default/coder", "a/{b}"])
def test_agent_references_are_namespace_and_name(bad: str) -> None:
    assert check_agent("team-a/coder.v2") == "team-a/coder.v2"
    with pytest.raises(InvalidId):
        check_agent(bad)
