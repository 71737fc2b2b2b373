"""The loading-state stream (router spec §5, §8.7): its schedule on a fake clock.

The writer's clock, sleep and RNG are injected: a fake sleep advances fake
time and yields once, so minutes of pacing run in milliseconds and every
event carries the fake time it was written at. No real sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelswap.server.loading import (
    RULE,
    LoadingStream,
    Pacing,
    error_events,
    reasoning_event,
    should_stream_loading,
)

PAUSE = 5 / 75  # one 5-character chunk at 75 chars/s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # let tasks woken "now" run before time jumps
        self.now += seconds
        await asyncio.sleep(0)

    async def run_until(self, t: float, *, limit: int = 100_000) -> None:
        """Let the writer run until fake time reaches ``t`` (yields only; no real time)."""
        for _ in range(limit):
            if self.now >= t:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"fake time stuck at {self.now}")


class FixedRng(random.Random):
    """Remarks in list order, every remark due exactly ``delay`` s after a message."""

    def __init__(self, delay: int = 5) -> None:
        super().__init__(0)
        self.delay = delay

    def shuffle(self, x: Any) -> None:  # keep the order
        pass

    def randint(self, a: int, b: int) -> int:
        assert (a, b) == (5, 9)
        return self.delay


@dataclass
class Sink:
    clock: FakeClock
    events: list[tuple[float, str]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    fail_after: int | None = None

    async def write(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.raw) >= self.fail_after:
            raise ConnectionResetError("Cannot write to closing transport")
        self.raw.append(data)
        text = data.decode()
        assert text.startswith("data: ") and text.endswith("\n\n")
        if b"[DONE]" in data:
            return  # the error frames; checked byte for byte by the test
        payload = json.loads(text[len("data: ") : -2])
        self.events.append((self.clock.now, payload["choices"][0]["delta"]["reasoning_content"]))

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.events)


def make(
    rng: random.Random | None = None, pacing: Pacing | None = None
) -> tuple[FakeClock, Sink, LoadingStream]:
    clock = FakeClock()
    sink = Sink(clock)
    stream = LoadingStream(
        sink.write,
        "test-model",
        clock=clock,
        sleep=clock.sleep,
        rng=rng or FixedRng(),
        remarks=["First remark here", "Second one", "Third"],
        pacing=pacing or Pacing(),
    )
    return clock, sink, stream


def test_sse_format_scenario_116() -> None:
    assert reasoning_event("hello world") == (
        b'data: {"choices":[{"delta":{"reasoning_content":"hello world"}}]}\n\n'
    )
    assert reasoning_event(RULE).decode() == (
        'data: {"choices":[{"delta":{"reasoning_content":"━━━━━"}}]}\n\n'
    )


def test_error_events_are_sse_then_done() -> None:
    data = error_events(500, "unspecific error: boom").decode()
    first, done, tail = data.split("\n\n")
    assert first.startswith("data: ") and done == "data: [DONE]" and tail == ""
    assert json.loads(first[len("data: ") :]) == {
        "src": "llama-swap",
        "error": {
            "message": "unspecific error: boom",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        },
    }
    assert '"code":"concurrency_limit"' in error_events(429, "x", "concurrency_limit").decode()


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("/v1/chat/completions", True),
        ("/v1/chat/completions/extra", True),
        ("/v1/completions", False),
        ("/v1/embeddings", False),
        ("/health", False),
        ("", False),
    ],
)
def test_path_filter_scenario_119(path: str, ok: bool) -> None:
    assert should_stream_loading(path, True, True, "stopped") is ok


def test_other_conditions() -> None:
    path = "/v1/chat/completions"
    assert not should_stream_loading(path, False, True, "stopped")
    assert not should_stream_loading(path, True, False, "stopped")
    assert not should_stream_loading(path, True, True, "ready")
    assert should_stream_loading(path, True, True, "starting")


async def test_opening_lines_are_paced_in_5_char_chunks_scenario_111() -> None:
    clock, sink, stream = make()
    stream.start()
    await clock.run_until(0.5)
    await stream.abort()
    opening = f"{RULE}\nllama-swap loading model: test-model\n"
    assert sink.text.startswith(opening)
    title = "llama-swap loading model: test-model"
    chunks = [title[i : i + 5] for i in range(0, len(title), 5)]
    assert [t for _, t in sink.events[:11]] == [RULE, "\n", *chunks, "\n"]
    times = [t for t, _ in sink.events[2:10]]  # the title's chunks
    assert times == pytest.approx([i * PAUSE for i in range(8)])  # no pause after the last


async def test_tick_schedule_remark_dots_remark() -> None:
    clock, sink, stream = make()
    stream.start()
    opened = 7 * PAUSE  # the title has 8 chunks
    await clock.run_until(opened + 0.75 * 9)
    await stream.abort()
    after_opening = sink.events[11:]
    # first tick: an inline remark ("\n", chunks, " ") right away
    first = after_opening[0][0]
    assert first == pytest.approx(opened + 0.75)
    texts = [t for _, t in after_opening]
    assert texts[:6] == ["\n", "First", " rema", "rk he", "re", " "]
    # then dots every 750 ms until the remark due 5 s later (tick 8 = 5.25 s later)
    dots = after_opening[6:12]
    assert [t for _, t in dots] == ["."] * 6
    assert [t for t, _ in dots] == pytest.approx([first + 0.75 * i for i in range(1, 7)])
    # 4.5 s after the remark it is not due yet; at 5.25 s (the 7th tick) it is
    assert texts[12:14] == ["\n", "Secon"]
    assert after_opening[12][0] == pytest.approx(first + 0.75 * 7)


async def test_remark_interval_is_5_to_9_seconds_with_real_rng() -> None:
    clock, sink, stream = make(rng=random.Random(7))
    stream.start()
    await clock.run_until(120)
    await stream.abort()
    starts = [
        t
        for (t, text), (_, following) in itertools.pairwise(sink.events)
        if text == "\n" and following not in ("\n", ".") and t > 1
    ]  # remark (and position) messages begin with "\n" followed by text
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) > 10
    assert all(5 <= g < 9 + 0.75 + 1e-9 for g in gaps), gaps
    assert "First remark here" in sink.text and "Third" in sink.text  # cycles through the list


async def test_queue_position_newest_only_and_resets_remark_timer_scenario_115() -> None:
    clock, sink, stream = make()
    stream.start()
    await clock.run_until(1.3)  # after the first remark
    stream.post_position(3)
    stream.post_position(2)
    await clock.run_until(8)
    await stream.abort()
    assert "Queue position: #2" in sink.text
    assert "#3" not in sink.text
    index = sink.text.index("Queue position: #2")
    assert sink.text[index - 1] == "\n" and sink.text[index + len("Queue position: #2")] == " "
    # the next remark is due 5 s after the position message, not after the first remark
    when = next(t for t, text in sink.events if text.startswith("Queue"))
    second = next(t for t, text in sink.events if text == "Secon")
    assert second - when >= 5


@dataclass
class FakeTicket:
    position: int | None
    changes: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    async def wait_position_change(self) -> int | None:
        return await self.changes.get()


async def test_follows_ticket_positions() -> None:
    clock, sink, stream = make()
    ticket = FakeTicket(position=4)
    stream.start(ticket)
    await clock.run_until(2)
    assert "Queue position: #4" in sink.text  # the initial position is shown first
    ticket.changes.put_nowait(1)
    await clock.run_until(clock.now + 2)
    await stream.abort()
    assert "Queue position: #1" in sink.text


async def test_finish_writes_done_lines_then_fences_scenario_114() -> None:
    clock, sink, stream = make()
    stream.start()
    await clock.run_until(3.0)
    elapsed = clock.now
    await stream.finish()
    assert stream.fenced
    tail = f"\nDone! ({elapsed:.2f}s)\n{RULE}\n \n"
    assert sink.text.endswith(tail)
    written = len(sink.events)
    stream.post_position(9)
    await clock.sleep(5)
    await stream.finish()  # idempotent, writes nothing more
    await stream.abort()
    assert len(sink.events) == written


async def test_finish_is_bounded_by_the_handover_and_fences() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    written: list[bytes] = []

    async def stuck_write(data: bytes) -> None:
        if b"Done" in data:
            await release.wait()  # a client that stopped reading
        written.append(data)

    stream = LoadingStream(
        stuck_write, "m", clock=clock, sleep=clock.sleep, rng=FixedRng(),
        pacing=Pacing(handover=0.05),
    )  # fmt: skip
    stream.start()
    await clock.run_until(1)
    await stream.finish()  # returns after the hand-over (50 ms real), not never
    assert stream.fenced
    count = len(written)
    release.set()
    await asyncio.sleep(0)
    assert len(written) == count
    assert not any(b"\\u2501" in w or "━".encode() in w for w in written[count:])


async def test_client_gone_stops_without_closing_lines() -> None:
    _, sink, stream = make()
    sink.fail_after = 4
    stream.start()
    for _ in range(20):  # the writer fails on its 5th event and stops by itself
        await asyncio.sleep(0)
    assert stream.client_gone
    await stream.finish()
    assert len(sink.raw) == 4
    assert "Done!" not in sink.text
    await stream.write_error(500, "boom")  # nothing: the client is gone
    assert len(sink.raw) == 4


async def test_error_after_loading_is_sse_framed() -> None:
    clock, sink, stream = make()
    stream.start()
    await clock.run_until(1)
    await stream.finish()
    await stream.write_error(500, "unspecific error: start failed")
    assert sink.raw[-1] == error_events(500, "unspecific error: start failed")


async def test_abort_writes_nothing_more() -> None:
    clock, sink, stream = make()
    stream.start()
    await clock.run_until(1)
    await stream.abort()
    count = len(sink.events)
    await stream.finish()
    assert len(sink.events) == count and "Done!" not in sink.text
    assert repr(stream) == f"<LoadingStream 'test-model' fenced events={count}>"
