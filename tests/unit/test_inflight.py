"""InflightTracker with an injected clock, timers and publisher (server spec §15; scenarios 59–62).

Nothing here sleeps or opens a socket: time is a number the test moves, the
trailing-update timer is a list the test fires, and the outbox is flushed
when the test says so (a "blocked publisher" is one that is not flushed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from modelswap.observability.events_hub import EventsHub
from modelswap.observability.inflight import (
    REDACTED,
    InflightTracker,
    canonical_header_key,
    redact_headers,
    rfc3339_nano,
)

START_NS = 1_714_564_800_123_456_789
"""2024-05-01T12:00:00.123456789Z."""


@dataclass
class Timer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class World:
    """The clock, the timers and the deferred flushes a tracker sees."""

    now: float = 100.0
    timers: list[Timer] = field(default_factory=list)
    deferred: list[Callable[[], None]] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(round(self.now + delay, 9), callback)
        self.timers.append(timer)
        return timer

    def defer(self, callback: Callable[[], None]) -> None:
        self.deferred.append(callback)

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer that falls due (in due order)."""
        self.now = round(self.now + seconds, 9)  # decimal steps, no float drift
        for timer in sorted(self.timers, key=lambda t: t.due):
            if timer.due <= self.now and not timer.cancelled:
                self.timers.remove(timer)
                timer.callback()

    def run_deferred(self) -> None:
        while self.deferred:
            self.deferred.pop(0)()

    @property
    def pending_timers(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]


class Sink:
    """A publisher that records ``inflight`` payloads; ``listening`` toggles subscribers."""

    def __init__(self, listening: bool = True) -> None:
        self.listening = listening
        self.events: list[dict[str, Any]] = []

    @property
    def has_subscribers(self) -> bool:
        return self.listening

    def publish(self, event_type: str, data: object) -> None:
        assert event_type == "inflight"
        assert isinstance(data, dict)
        self.events.append(data)

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


def make(sink: Sink | None = None, **options: Any) -> tuple[InflightTracker, World, Sink]:
    world, sink = World(), sink or Sink()
    tracker = InflightTracker(
        sink,
        clock=world.clock,
        wall_ns=lambda: START_NS,
        call_later=world.call_later,
        defer=world.defer,
        **options,
    )
    return tracker, world, sink


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def begin(tracker: InflightTracker, cancel: Callable[[], None] = lambda: None, **kw: Any) -> int:
    args: dict[str, Any] = {
        "model": "qwen",
        "method": "POST",
        "path": "/v/chat/completions",
        "headers": headers(("user-agent", "curl/8"), ("Authorization", "Bearer sk-secret")),
        "remote_ip": "203.0.113.9",
        "metadata": {"client": "web"},
        "cancel": cancel,
    }
    args.update(kw)
    return tracker.begin(**args)


def ops(events: list[dict[str, Any]]) -> list[str]:
    return [event["operation"] for event in events]


# --- helpers ----------------------------------------------------------------------


def test_header_names_are_canonical_first_value_wins_and_credentials_redacted() -> None:
    raw = headers(
        ("x-api-key", "k1"),
        ("accept", "a"),
        ("Accept", "b"),
        ("COOKIE", "c=1"),
        ("set-cookie", "s=1"),
        ("proxy-authorization", "Basic x"),
        ("authorization", "Bearer y"),
        ("x-trace-id", "t"),
    )
    assert redact_headers(raw) == {
        "X-Api-Key": REDACTED,
        "Accept": "a",
        "Cookie": REDACTED,
        "Set-Cookie": REDACTED,
        "Proxy-Authorization": REDACTED,
        "Authorization": REDACTED,
        "X-Trace-Id": "t",
    }
    assert canonical_header_key("content-TYPE") == "Content-Type"
    assert canonical_header_key("bad header") == "bad header"


def test_timestamp_is_rfc3339_nano_without_trailing_zeros() -> None:
    pattern = r"2024-05-0[12]T\d\d:\d\d:00\.123456789(Z|[+-]\d\d:\d\d)"
    assert re.fullmatch(pattern, rfc3339_nano(START_NS))
    assert re.fullmatch(r"[\dT:-]+\.5(Z|[+-]\d\d:\d\d)", rfc3339_nano(1_500_000_000))
    assert re.fullmatch(r"[\dT:-]+:01(Z|[+-]\d\d:\d\d)", rfc3339_nano(1_000_000_000))


# --- scenario 59: the entry -----------------------------------------------------------


def test_entry_during_request_and_removed_after() -> None:
    tracker, world, _ = make()
    request_id = begin(tracker)
    assert request_id == 1 and begin(tracker) == 2
    world.advance(1.0)
    [entry, _second] = tracker.snapshot()
    assert entry == {
        "id": "1",
        "timestamp": rfc3339_nano(START_NS),
        "model": "qwen",
        "req_path": "/v/chat/completions",
        "method": "POST",
        "req_headers": {"User-Agent": "curl/8", "Authorization": REDACTED},
        "remote_ip": "203.0.113.9",
        "resp_headers": {},
        "resp_bytes": 0,
        "elapsed_ms": 1000,
        "metadata": {"client": "web"},
    }
    assert list(entry) == [  # field order as llama-swap writes it
        "id", "timestamp", "model", "req_path", "method", "req_headers",
        "remote_ip", "resp_headers", "resp_bytes", "elapsed_ms", "metadata",
    ]  # fmt: skip
    tracker.end(request_id)
    tracker.end(2)
    assert tracker.snapshot() == [] and len(tracker) == 0


def test_metadata_is_copied_at_start_and_omitted_when_empty() -> None:
    tracker, _, _ = make()
    metadata = {"client": "web"}
    begin(tracker, metadata=metadata)
    begin(tracker, metadata={})
    metadata["late"] = "x"
    first, second = tracker.snapshot()
    assert first["metadata"] == {"client": "web"}
    assert "metadata" not in second


# --- scenario 60: the event sequence of a streamed request ----------------------------------


def test_streaming_request_publishes_start_headers_bytes_remove() -> None:
    """Scenario 60, with the publisher flushing between the steps."""
    tracker, world, sink = make()
    request_id = begin(tracker)
    world.run_deferred()
    tracker.response_started(
        request_id, headers(("Content-Type", "text/event-stream"), ("Set-Cookie", "sid=1"))
    )
    world.run_deferred()
    tracker.add_bytes(request_id, 5)
    world.run_deferred()
    tracker.end(request_id)
    world.run_deferred()
    start, with_headers, with_bytes, remove = sink.take()
    assert start["operation"] == "upsert" and start["request"]["resp_headers"] == {}
    assert with_headers["request"]["resp_headers"] == {
        "Content-Type": "text/event-stream",
        "Set-Cookie": REDACTED,
    }
    assert with_headers["request"]["resp_bytes"] == 0
    assert with_bytes["request"]["resp_bytes"] == 5
    assert remove == {"operation": "remove", "id": "1"}


def test_a_request_that_began_and_ended_between_two_flushes_is_never_shown() -> None:
    """No listener was told about it, so neither its upserts nor its remove are published."""
    tracker, world, sink = make()
    request_id = begin(tracker)
    tracker.response_started(request_id, headers(("Content-Type", "text/plain")))
    tracker.add_bytes(request_id, 5)
    tracker.end(request_id)
    world.run_deferred()
    assert sink.take() == []
    assert tracker.snapshot_event() == {"operation": "snapshot"}


def test_changes_between_two_flushes_are_published_as_the_current_state_once() -> None:
    """Several changes of one request since the last flush: one upsert with all of them."""
    tracker, world, sink = make()
    first, second = begin(tracker), begin(tracker)
    world.run_deferred()
    assert [e["request"]["id"] for e in sink.take()] == ["1", "2"]
    tracker.response_started(second, headers(("Content-Type", "text/plain")))
    tracker.add_bytes(second, 5)
    tracker.response_started(first, headers(("Content-Type", "text/plain")))
    tracker.end(first)  # shown before, so its remove is published
    third = begin(tracker)
    world.run_deferred()
    events = sink.take()
    assert [(e["operation"], e.get("id") or e["request"]["id"]) for e in events] == [
        ("upsert", "2"),
        ("remove", "1"),
        ("upsert", str(third)),
    ]
    assert events[0]["request"]["resp_bytes"] == 5
    assert events[0]["request"]["resp_headers"] == {"Content-Type": "text/plain"}


def test_a_request_in_a_new_clients_snapshot_gets_its_remove() -> None:
    """Begun after the last flush but shown to a client in its snapshot: its end is published."""
    tracker, world, sink = make()
    request_id = begin(tracker)
    assert tracker.snapshot_event()["requests"][0]["id"] == "1"  # a client connects now
    tracker.end(request_id)
    world.run_deferred()
    assert sink.take() == [{"operation": "remove", "id": "1"}]


def test_elapsed_is_recomputed_when_published() -> None:
    tracker, world, sink = make()
    begin(tracker)
    world.now += 2.5  # the flush runs later than the begin
    world.run_deferred()
    assert sink.take()[0]["request"]["elapsed_ms"] == 2500


def test_byte_updates_are_throttled_to_one_per_250ms_with_a_trailing_update() -> None:
    tracker, world, sink = make()
    request_id = begin(tracker)
    world.run_deferred()
    sink.take()

    def published_bytes() -> list[int]:
        world.run_deferred()
        return [e["request"]["resp_bytes"] for e in sink.take()]

    tracker.add_bytes(request_id, 10)  # t=0: first one goes at once
    assert published_bytes() == [10]
    world.advance(0.1)
    tracker.add_bytes(request_id, 10)  # t=0.1: throttled, trailing update armed for t=0.25
    world.advance(0.05)
    tracker.add_bytes(request_id, 10)  # t=0.15: already armed
    assert published_bytes() == []
    assert [round(t.due - 100.0, 3) for t in world.pending_timers] == [0.25]
    world.advance(0.1)  # t=0.25: the trailing update shows everything so far
    assert published_bytes() == [30]
    tracker.add_bytes(request_id, 1)  # t=0.25: just published, so throttled again
    assert published_bytes() == []
    world.advance(0.25)
    assert published_bytes() == [31]
    world.advance(0.3)
    tracker.add_bytes(request_id, 1)  # quiet for longer than 250 ms: immediate again
    assert published_bytes() == [32]


def test_end_cancels_the_pending_trailing_update() -> None:
    tracker, world, sink = make()
    request_id = begin(tracker)
    world.run_deferred()
    sink.take()
    tracker.add_bytes(request_id, 1)
    tracker.add_bytes(request_id, 1)
    assert len(world.pending_timers) == 1
    tracker.end(request_id)
    assert world.pending_timers == []
    world.run_deferred()
    assert ops(sink.take()) == ["remove"]


def test_nothing_is_queued_or_armed_while_nobody_listens() -> None:
    sink = Sink(listening=False)
    tracker, world, _ = make(sink)
    request_id = begin(tracker)
    tracker.response_started(request_id, headers(("Content-Type", "text/plain")))
    for _ in range(1000):
        tracker.add_bytes(request_id, 3)
    assert world.deferred == [] and world.timers == []
    assert tracker.snapshot()[0]["resp_bytes"] == 3000  # the count is still kept
    sink.listening = True  # a client connects: snapshot first, then live updates
    assert tracker.snapshot_event()["requests"][0]["resp_headers"] == {"Content-Type": "text/plain"}
    tracker.end(request_id)
    world.run_deferred()
    assert sink.take() == [{"operation": "remove", "id": "1"}]


# --- scenario 61: a blocked publisher --------------------------------------------------------


def test_overflowing_outbox_is_replaced_by_one_snapshot() -> None:
    tracker, world, sink = make(outbox_size=1)
    request_id = begin(tracker)  # fills the outbox; the publisher is "blocked" (not flushed)
    tracker.end(request_id)  # the same request: still one entry in the outbox
    assert tracker.overflows == 0
    tracker.end(begin(tracker))  # does not block: the pending update is discarded instead
    assert tracker.overflows == 1
    assert len(world.deferred) == 1  # one flush scheduled, however many updates
    world.run_deferred()
    assert sink.take() == [{"operation": "snapshot"}]  # no requests: key omitted


def test_overflow_snapshot_shows_the_current_state() -> None:
    tracker, world, sink = make(outbox_size=128)
    ids = [begin(tracker) for _ in range(130)]
    for request_id in ids[:100]:
        tracker.end(request_id)
    world.run_deferred()
    [snapshot] = sink.take()
    assert snapshot["operation"] == "snapshot"
    assert [r["id"] for r in snapshot["requests"]] == [str(i) for i in ids[100:]]
    tracker.end(ids[100])  # after the snapshot, incremental updates resume
    world.run_deferred()
    assert sink.take() == [{"operation": "remove", "id": "101"}]


# --- scenario 62: cancel ------------------------------------------------------------------


def test_cancel_calls_the_requests_cancel_and_unknown_is_false() -> None:
    tracker, _, _ = make()
    cancelled: list[int] = []
    request_id = begin(tracker, cancel=lambda: cancelled.append(1))
    assert tracker.cancel(request_id) is True
    assert cancelled == [1]
    assert len(tracker) == 1  # normal cleanup (end) removes it, not cancel
    assert tracker.cancel(999) is False
    tracker.end(request_id)
    assert tracker.cancel(request_id) is False


def test_a_failing_cancel_callback_does_not_escape() -> None:
    tracker, _, _ = make()

    def boom() -> None:
        raise RuntimeError("boom")

    assert tracker.cancel(begin(tracker, cancel=boom)) is True


def test_unknown_ids_are_ignored_on_the_request_path() -> None:
    tracker, world, sink = make()
    tracker.response_started(7, headers())
    tracker.add_bytes(7, 5)
    tracker.end(7)
    world.run_deferred()
    assert sink.events == []


def test_real_hub_receives_inflight_events() -> None:
    hub = EventsHub()
    world = World()
    tracker = InflightTracker(
        hub, clock=world.clock, call_later=world.call_later, defer=world.defer
    )
    with hub.subscribe() as sub:
        request_id = begin(tracker)
        world.run_deferred()
        sub.get_nowait()
        tracker.end(request_id)
        world.run_deferred()
        [message] = sub.get_nowait()
    assert b'"type":"inflight"' in message
    assert b'{\\"operation\\":\\"remove\\",\\"id\\":\\"1\\"}' in message
