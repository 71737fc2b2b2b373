"""LogFanout without an event loop: history ring, bounded queues, drop marker, sink."""

from __future__ import annotations

import pytest

from modelswap.observability.log_fanout import LogFanout, dropped_marker


def drain(sub: object) -> list[bytes]:
    out = []
    while (chunk := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
        out.append(chunk)
    return out


def test_history_keeps_only_the_tail() -> None:
    fan = LogFanout("m", history_bytes=10)
    assert fan.history() == b""
    fan.write(b"0123456")
    fan.write(b"789abc")
    assert fan.history() == b"3456789abc"
    assert fan.bytes_written == 13


def test_history_is_allocated_lazily() -> None:
    fan = LogFanout("m")
    assert fan._history is None
    fan.write(b"")
    assert fan._history is None
    fan.write(b"x")
    assert fan.history() == b"x"


def test_every_subscriber_gets_every_chunk_in_order() -> None:
    fan = LogFanout("m")
    a, b = fan.subscribe(), fan.subscribe()
    fan.write(b"one\n")
    fan.write(b"two\n")
    assert drain(a) == drain(b) == [b"one\n", b"two\n"]
    assert drain(a) == []


def test_subscribe_with_history_has_no_gap_and_no_overlap() -> None:
    fan = LogFanout("m")
    fan.write(b"before\n")
    sub = fan.subscribe(with_history=True)
    fan.write(b"after\n")
    assert b"".join(drain(sub)) == b"before\nafter\n"


def test_slow_subscriber_drops_with_marker_and_others_do_not() -> None:
    fan = LogFanout("m", queue_entries=3)
    slow, fast = fan.subscribe(), fan.subscribe()
    for i in range(6):
        fan.write(b"%d" % i)
        assert fast.get_nowait() == b"%d" % i  # keeps up: loses nothing
    # slow read nothing: 3 queued, 3 bytes dropped, marker once the queue drains
    assert drain(slow) == [b"0", b"1", b"2", dropped_marker(3)]
    assert dropped_marker(3) == "\n— 3 bytes dropped —\n".encode()
    assert fan.history() == b"012345"  # history has everything


def test_marker_is_placed_where_the_gap_is() -> None:
    fan = LogFanout("m", queue_entries=2)
    sub = fan.subscribe()
    fan.write(b"a")
    fan.write(b"b")
    fan.write(b"lost")  # full: dropped
    assert sub.get_nowait() == b"a"
    assert sub.get_nowait() == b"b"
    fan.write(b"c")  # room again: marker first, then the new data
    assert drain(sub) == [dropped_marker(4), b"c"]


def test_sink_sees_every_write_and_a_broken_sink_is_dropped() -> None:
    seen: list[bytes] = []
    fan = LogFanout("m", sink=seen.append)
    fan.write(b"x")
    fan.write(b"y")
    assert seen == [b"x", b"y"]

    def broken(_: bytes) -> None:
        raise RuntimeError("boom")

    fan2 = LogFanout("m2", sink=broken)
    fan2.write(b"x")  # logged, not raised
    fan2.write(b"y")
    assert fan2.history() == b"xy"


def test_close_unsubscribes_but_keeps_queued_data() -> None:
    fan = LogFanout("m")
    with fan.subscribe() as sub:
        fan.write(b"kept")
        assert fan.subscriber_count == 1
    assert fan.subscriber_count == 0
    fan.write(b"not delivered")
    assert drain(sub) == [b"kept"]


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        LogFanout("m", queue_entries=0)
