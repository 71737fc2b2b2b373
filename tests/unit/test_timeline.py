"""The swap timeline's bookkeeping: intervals, swaps, request marks, the window and the caps.

Pure: the clock is a variable the test moves; facts and records are built by hand.
"""

from __future__ import annotations

from modelswap.observability.records import Explain, RequestRecord
from modelswap.observability.timeline import CANCELLED, Timeline
from modelswap.process.state import ProcessState, StateChange
from modelswap.router.facts import SwapFinished, SwapStarted

S = ProcessState


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def change(model: str, old: ProcessState, new: ProcessState) -> StateChange:
    return StateChange(model, old, new)


def record(
    model: str,
    arrived: float,
    ended: float,
    *,
    granted: float | None = None,
    swap_id: int | None = None,
    explain: Explain | None = None,
    status: int = 200,
) -> RequestRecord:
    return RequestRecord(
        request_id=1,
        model=model,
        method="POST",
        req_path="/v1/chat/completions",
        started_wall=arrived,
        ended_wall=ended,
        duration_ms=(ended - arrived) * 1000,
        status=status,
        resp_content_type="application/json",
        explain=explain,
        granted_wall=granted,
        swap_id=swap_id,
    )


def states(
    timeline: Timeline, since: float | None = None
) -> list[tuple[str, str, float, float | None]]:
    return [(s.model, s.state, s.start, s.end) for s in timeline.snapshot(since).states]


def test_intervals_open_and_close_with_state_changes() -> None:
    clock = Clock(10.0)
    t = Timeline(["a", "b"], clock=clock)
    t.on_state_change(change("a", S.STOPPED, S.STARTING))
    clock.now = 12.0
    t.on_state_change(change("a", S.STARTING, S.READY))
    assert states(t) == [("a", "starting", 10.0, 12.0), ("a", "ready", 12.0, None)]
    clock.now = 20.0
    t.on_state_change(change("a", S.READY, S.STOPPING))
    clock.now = 21.0
    t.on_state_change(change("a", S.STOPPING, S.STOPPED))  # stopped: no interval
    t.on_state_change(change("b", S.STOPPED, S.STARTING))
    assert states(t) == [
        ("a", "starting", 10.0, 12.0),
        ("a", "ready", 12.0, 20.0),
        ("a", "stopping", 20.0, 21.0),
        ("b", "starting", 21.0, None),
    ]
    clock.now = 22.0
    t.on_state_change(change("b", S.STARTING, S.SHUTDOWN))  # terminal: closes too
    assert states(t)[-1] == ("b", "starting", 21.0, 22.0)
    assert t.models == ("a", "b")


def test_same_state_twice_keeps_one_interval() -> None:
    t = Timeline(["a"], clock=Clock(5.0))
    t.state_changed("a", "ready", 1.0)
    t.state_changed("a", "ready", 3.0)
    assert states(t) == [("a", "ready", 1.0, None)]


def test_crash_from_ready_closes_the_interval() -> None:
    t = Timeline(["a"], clock=Clock(5.0))
    t.state_changed("a", "ready", 1.0)
    t.state_changed("a", "stopped", 4.0)
    assert states(t) == [("a", "ready", 1.0, 4.0)]


def test_swaps_open_then_finish_with_wall_offset() -> None:
    t = Timeline(["a", "b"], clock=Clock(1000.0), wall_offset=900.0)
    t.on_fact(SwapStarted(7, "b", ("a",), "group", 50.0))
    (mark,) = t.snapshot().swaps
    assert mark.as_json() == {
        "id": 7,
        "model": "b",
        "evict": ["a"],
        "reason": "group",
        "started": 950.0,
        "evicted": None,
        "finished": None,
        "error": None,
    }
    t.on_fact(SwapFinished(7, "b", ("a",), "group", 50.0, 51.0, 53.5, None))
    (mark,) = t.snapshot().swaps
    assert (mark.started, mark.evicted, mark.finished, mark.error) == (950.0, 951.0, 953.5, None)


def test_failed_swap_keeps_its_error() -> None:
    t = Timeline(["a"], clock=Clock(100.0))
    t.on_fact(SwapStarted(1, "a", (), "group", 10.0))
    t.on_fact(SwapFinished(1, "a", (), "group", 10.0, 10.0, 12.0, "upstream exited"))
    assert t.snapshot().swaps[0].error == "upstream exited"


def test_stale_open_swaps_end_as_cancelled() -> None:
    clock = Clock(100.0)
    t = Timeline(["a", "b"], clock=clock)
    t.on_fact(SwapStarted(1, "a", (), "group", 90.0))
    t.on_fact(SwapStarted(2, "b", ("a",), "group", 95.0))
    t.on_fact(SwapFinished(2, "b", ("a",), "group", 95.0, 96.0, 97.0, None))
    clock.now = 105.0
    assert t.close_stale_swaps(live={2}) == 1  # swap 1 vanished without a fact
    by_id = {m.id: m for m in t.snapshot().swaps}
    assert (by_id[1].finished, by_id[1].error) == (105.0, CANCELLED)
    assert by_id[2].error is None and by_id[2].finished == 97.0  # finished swaps untouched
    assert t.close_stale_swaps(live=set()) == 0


def test_request_marks_from_stored_rows() -> None:
    t = Timeline(["a"], clock=Clock(100.0))
    explain = Explain(queue_ms=1.23456, swap_model="a", load_ms=1500.0)
    t.on_stored(
        [
            (11, record("a", 10.0, 13.0, granted=12.0, swap_id=3, explain=explain)),
            (12, record("peer-model", 10.0, 11.0)),  # no lane: not on the timeline
            (13, record("a", 9.0, 9.5, status=429)),  # refused: never granted
        ]
    )
    marks = [m.as_json() for m in t.snapshot().requests]
    assert marks == [
        {
            "id": 13,
            "model": "a",
            "arrived": 9.0,
            "granted": None,
            "ended": 9.5,
            "status": 429,
            "swap_id": None,
            "queue_ms": 0.0,
            "load_ms": None,
        },
        {
            "id": 11,
            "model": "a",
            "arrived": 10.0,
            "granted": 12.0,
            "ended": 13.0,
            "status": 200,
            "swap_id": 3,
            "queue_ms": 1.235,
            "load_ms": 1500.0,
        },
    ]


def test_everything_older_than_the_window_is_pruned() -> None:
    clock = Clock(0.0)
    t = Timeline(["a"], clock=clock, window=3600.0)
    t.state_changed("a", "starting", 0.0)
    t.state_changed("a", "ready", 1.0)
    t.state_changed("a", "stopping", 2.0)
    t.state_changed("a", "stopped", 3.0)
    t.on_fact(SwapStarted(1, "a", (), "group", 0.0))
    t.on_fact(SwapFinished(1, "a", (), "group", 0.0, 0.0, 1.0, None))
    t.on_stored([(1, record("a", 1.5, 2.5))])
    t.state_changed("a", "starting", 10.0)  # still open an hour later
    clock.now = 3602.5  # ready (ended 2.0) is gone; stopping (ended 3.0) is not yet
    snap = t.snapshot()
    assert snap.since == 2.5
    assert [(s.state, s.end) for s in snap.states] == [("stopping", 3.0), ("starting", None)]
    assert snap.swaps == ()
    assert [r.id for r in snap.requests] == [1]
    clock.now = 3700.0
    snap = t.snapshot()
    assert [(s.state, s.end) for s in snap.states] == [("starting", None)]  # open: kept
    assert snap.requests == ()
    assert t.statistics().intervals == 1 and t.statistics().requests == 0


def test_since_filters_and_is_clamped_to_the_window() -> None:
    clock = Clock(5000.0)
    t = Timeline(["a"], clock=clock, window=3600.0)
    t.state_changed("a", "ready", 4000.0)
    t.state_changed("a", "stopped", 4100.0)
    t.state_changed("a", "starting", 4900.0)
    t.on_stored([(1, record("a", 4050.0, 4060.0)), (2, record("a", 4950.0, 4990.0))])
    snap = t.snapshot(since=4500.0)
    assert snap.since == 4500.0 and snap.now == 5000.0
    assert [(s.state, s.start) for s in snap.states] == [("starting", 4900.0)]
    assert [r.id for r in snap.requests] == [2]
    assert t.snapshot(since=0.0).since == 5000.0 - 3600.0  # clamped to the last hour
    assert [r.id for r in t.snapshot(since=0.0).requests] == [1, 2]


def test_caps_drop_the_oldest_and_count() -> None:
    t = Timeline(["a"], clock=Clock(100.0), max_requests=3, max_swaps=2, max_intervals=2)
    t.on_stored([(i, record("a", float(i), float(i) + 0.5)) for i in range(1, 6)])
    assert [r.id for r in t.snapshot().requests] == [3, 4, 5]
    for swap_id in (1, 2, 3):
        t.on_fact(SwapStarted(swap_id, "a", (), "group", 50.0 + swap_id))
    assert [m.id for m in t.snapshot().swaps] == [2, 3]
    t.on_fact(SwapFinished(1, "a", (), "group", 51.0, 51.0, 52.0, None))  # dropped: stays out
    assert [m.id for m in t.snapshot().swaps] == [2, 3]
    for n, state in enumerate(["starting", "ready", "stopping"]):
        t.state_changed("a", state, 60.0 + n)
    assert [s.state for s in t.snapshot().states] == ["ready", "stopping"]
    assert t.statistics().dropped == 2 + 1 + 1
    assert "dropped=4" in repr(t)


def test_snapshot_json_shape() -> None:
    t = Timeline(["b", "a"], clock=Clock(100.0))
    t.state_changed("a", "ready", 90.0)
    body = t.snapshot(since=95.0).as_json()
    assert body == {
        "now": 100.0,
        "since": 95.0,
        "models": ["a", "b"],
        "states": [{"model": "a", "state": "ready", "from": 90.0, "to": None}],
        "swaps": [],
        "requests": [],
    }
